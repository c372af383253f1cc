"""hybrid: the best neural model on valid (the tuned model or a baseline), linearly interpolated with the
best hybrid.ngram model on valid, the weight fitted on valid -> models/hybrid/ (hybrid.json, scores.json),
plots/hybrid.png."""

from seqlab import paths, stage
from seqlab.determinism import fix_threads
from seqlab.errors import exit_on_error
from seqlab.hybrid import Interpolated, Remembered, fit_weights, plot_weights, spec
from seqlab.io import atomic_path, write_json
from seqlab.loading import open_model
from seqlab.registry import registered_name
from seqlab.scoring import Summary, load_eval_set, read_summary, score
from seqlab.vocab import load_vocab

PLOT = "plots/hybrid.png"


def best_on_valid(folders: list[str]) -> tuple[str, dict]:
    summaries = {folder: read_summary(folder) for folder in folders}
    folder = min(summaries, key=lambda f: (summaries[f]["valid"]["ppl"], f))
    return folder, summaries[folder]


@exit_on_error
def main() -> None:
    params = stage.params()
    fix_threads()
    with stage.tracked("hybrid", params, "hybrid", outs=(paths.HYBRID, PLOT)) as run:
        vocab = load_vocab(paths.VOCAB)
        neural_dir, neural = best_on_valid(list(stage.neural_folders(params).values()))
        ngram_dir, ngram = best_on_valid([paths.ngram_folder(params.hybrid.ngram, order) for order in params.ngram.orders])
        files = [f"{neural_dir}/model.pt", f"{ngram_dir}/model.npz"]
        names = [neural["model"], ngram["model"]]
        parts = [Remembered(open_model(f, vocab)) for f in files]  # the neural part as its own stage scored it
        valid, test = (load_eval_set(paths.TOKENS, split, vocab) for split in ("valid", "test"))
        print(f"hybrid: {names[0]} (valid ppl {neural['valid']['ppl']:.2f}) with {names[1]} (valid ppl {ngram['valid']['ppl']:.2f})")
        on = {name: [part.log_probs(data.segments)[data.scored] for part in parts] for name, data in (("valid", valid), ("test", test))}
        weights, iterations = fit_weights(on["valid"])
        model = Interpolated(parts, weights)
        scores = {split: score(model, data, "hybrid") for split, data in (("valid", valid), ("test", test))}
        summary = Summary("hybrid", "hybrid", "interpolation", None, registered_name("hybrid"),
                          {"parts": {name: float(w) for name, w in zip(names, weights)}}, vocab.sha256, scores["valid"], scores["test"])
        with atomic_path(paths.HYBRID) as tmp:
            tmp.mkdir()
            write_json(tmp / "hybrid.json", spec(list(zip(names, files)), weights, iterations))
            write_json(tmp / "scores.json", summary.as_dict())
        plot_weights(on["valid"], on["test"], float(weights[0]), names, PLOT)
        version = stage.publish(
            run, summary, paths.HYBRID, {"hybrid": f"{paths.HYBRID}/hybrid.json", "neural": files[0], "ngram": files[1],
                                         "neural_scores": f"{neural_dir}/scores.json"},  # how the neural part is read
            stage.example_context(valid, vocab),
            params={"parts": ", ".join(names), **{f"weight.{name}": f"{w:.6f}" for name, w in zip(names, weights)}},
            metrics={"em_iterations": iterations},
            artifacts=[f"{paths.HYBRID}/hybrid.json", f"{paths.HYBRID}/scores.json", PLOT],
            tags={"parts": ", ".join(f"{name}={w:.4f}" for name, w in zip(names, weights))}, deps=[neural_dir, ngram_dir])
    best_single = min(neural["test"]["ppl"], ngram["test"]["ppl"])
    print(f"hybrid: weights {names[0]} {weights[0]:.4f}, {names[1]} {weights[1]:.4f} ({iterations} EM steps); valid ppl "
          f"{scores['valid'].ppl:.2f}, test ppl {scores['test'].ppl:.2f} ({(scores['test'].ppl / best_single - 1) * 100:+.1f} % "
          f"against the better part); registered as {summary.registered_model} version {version}")


if __name__ == "__main__":
    main()
