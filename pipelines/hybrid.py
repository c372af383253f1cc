"""hybrid: the best neural model on valid (the tuned model or a baseline), linearly interpolated with an
n-gram model, the weight fitted on valid -> models/hybrid/ (hybrid.json, scores.json), plots/hybrid.png.
The n-gram model is the hybrid.ngram estimator at its best order on valid; with ``best``, each
estimator's best order is mixed and the mix best on valid is kept."""

import math

from seqlab import paths, stage
from seqlab.determinism import fix_threads
from seqlab.errors import exit_on_error
from seqlab.hybrid import Interpolated, Remembered, best_mix, plot_weights, spec
from seqlab.io import atomic_path, write_json
from seqlab.loading import open_model
from seqlab.registry import registered_name
from seqlab.scoring import Summary, best_on_valid, load_eval_set, score
from seqlab.vocab import load_vocab

PLOT = "plots/hybrid.png"


@exit_on_error
def main() -> None:
    params = stage.params()
    fix_threads()
    with stage.tracked("hybrid", params, "hybrid", outs=(paths.HYBRID, PLOT)) as run:
        vocab = load_vocab(paths.VOCAB)
        neural_dir, neural = best_on_valid(list(stage.neural_folders(params).values()))
        estimators = params.ngram.estimators if params.hybrid.ngram == "best" else [params.hybrid.ngram]
        ngrams = dict(best_on_valid([paths.ngram_folder(e, order) for order in params.ngram.orders]) for e in estimators)
        valid, test = (load_eval_set(paths.TOKENS, split, vocab) for split in ("valid", "test"))
        neural_part = Remembered(open_model(f"{neural_dir}/model.pt", vocab))  # the neural part as its own stage scored it
        opened = {folder: Remembered(open_model(f"{folder}/model.npz", vocab)) for folder in ngrams}
        ngram_dir, weights, iterations, candidates = best_mix(
            neural_part.log_probs(valid.segments)[valid.scored],
            {folder: model.log_probs(valid.segments)[valid.scored] for folder, model in opened.items()})
        ngram, candidates = ngrams[ngram_dir], {ngrams[folder]["model"]: nats for folder, nats in candidates.items()}
        files = [f"{neural_dir}/model.pt", f"{ngram_dir}/model.npz"]
        names = [neural["model"], ngram["model"]]
        parts = [neural_part, opened.pop(ngram_dir)]
        del opened  # the other candidates' tables need not stay in memory
        print(f"hybrid: {names[0]} (valid ppl {neural['valid']['ppl']:.2f}) with {names[1]} (valid ppl {ngram['valid']['ppl']:.2f})")
        if len(candidates) > 1:
            print("hybrid: each estimator's mix on valid (ppl): " + ", ".join(
                f"{name} {math.exp(nats):.2f}" for name, nats in sorted(candidates.items(), key=lambda item: item[1])))
        on = {name: [part.log_probs(data.segments)[data.scored] for part in parts] for name, data in (("valid", valid), ("test", test))}
        model = Interpolated(parts, weights)
        scores = {split: score(model, data, "hybrid") for split, data in (("valid", valid), ("test", test))}
        summary = Summary("hybrid", "hybrid", "interpolation", None, registered_name("hybrid"),
                          {"parts": {name: float(w) for name, w in zip(names, weights)}}, vocab.sha256, scores["valid"], scores["test"])
        with atomic_path(paths.HYBRID) as tmp:
            tmp.mkdir()
            write_json(tmp / "hybrid.json", spec(list(zip(names, files)), weights, iterations, candidates if len(candidates) > 1 else None))
            write_json(tmp / "scores.json", summary.as_dict())
        plot_weights(on["valid"], on["test"], float(weights[0]), names, PLOT)
        version = stage.publish(
            run, summary, paths.HYBRID, {"hybrid": f"{paths.HYBRID}/hybrid.json", "neural": files[0], "ngram": files[1],
                                         "neural_scores": f"{neural_dir}/scores.json"},  # how the neural part is read
            stage.example_context(valid, vocab),
            params={"parts": ", ".join(names), **{f"weight.{name}": f"{w:.6f}" for name, w in zip(names, weights)}},
            metrics={"fit_iterations": iterations, **{f"candidate_valid_ppl.{n}": math.exp(x) for n, x in candidates.items()}},
            artifacts=[f"{paths.HYBRID}/hybrid.json", f"{paths.HYBRID}/scores.json", PLOT],
            tags={"parts": ", ".join(f"{name}={w:.4f}" for name, w in zip(names, weights))}, deps=[neural_dir, ngram_dir])
    best_single = min(neural["test"]["ppl"], ngram["test"]["ppl"])
    print(f"hybrid: weights {names[0]} {weights[0]:.4f}, {names[1]} {weights[1]:.4f} ({iterations} steps of the fit); valid ppl "
          f"{scores['valid'].ppl:.2f}, test ppl {scores['test'].ppl:.2f} ({(scores['test'].ppl / best_single - 1) * 100:+.1f} % "
          f"against the better part); registered as {summary.registered_model} version {version}")


if __name__ == "__main__":
    main()
