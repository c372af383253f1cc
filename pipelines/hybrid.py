"""hybrid: the best neural model on valid (the tuned model or a baseline), linearly interpolated with the
best hybrid.ngram model on valid, the weight fitted on valid -> models/hybrid/ (hybrid.json, scores.json),
plots/hybrid.png."""

import pandas as pd

from seqlab import stage
from seqlab.errors import exit_on_error
from seqlab.evaluate import load_eval_set, open_model, score
from seqlab.hybrid import Interpolated, Remembered, fit_weights, plot_weights, spec
from seqlab.io import atomic_path, read_json, write_json
from seqlab.registry import registered_name, version_tags
from seqlab.train import TrainConfig
from seqlab.vocab import load_vocab

TOKENS, VOCAB, OUT, PLOT = "data/tokens", "data/vocab", "models/hybrid", "plots/hybrid.png"


def best_on_valid(folders: list[str]) -> tuple[str, dict]:
    summaries = {folder: read_json(f"{folder}/scores.json") for folder in folders}
    folder = min(summaries, key=lambda f: (summaries[f]["valid"]["ppl"], f))
    return folder, summaries[folder]


@exit_on_error
def main() -> None:
    params = stage.params()
    with stage.tracked("hybrid", params, "hybrid", outs=(OUT, PLOT)) as run:
        vocab = load_vocab(VOCAB)
        neural_dir, neural = best_on_valid(list(stage.neural_folders(params).values()))
        ngram_dir, ngram = best_on_valid([f"models/ngram/{params.hybrid.ngram}-{order}" for order in params.ngram.orders])
        files = [f"{neural_dir}/model.pt", f"{ngram_dir}/model.npz"]
        names = [neural["model"], ngram["model"]]
        scoring = TrainConfig(**neural["train"])  # score the neural part as its own stage did
        parts = [Remembered(open_model(f, vocab, scoring.eval_batch_size, scoring.eval_window)) for f in files]
        valid, test = (load_eval_set(TOKENS, split, vocab) for split in ("valid", "test"))
        print(f"hybrid: {names[0]} (valid ppl {neural['valid']['ppl']:.2f}) with {names[1]} (valid ppl {ngram['valid']['ppl']:.2f})")
        on = {name: [part.log_probs(data.segments)[data.scored] for part in parts] for name, data in (("valid", valid), ("test", test))}
        weights, iterations = fit_weights(on["valid"])
        model = Interpolated(parts, weights)
        scores = {split: score(model, data, "hybrid") for split, data in (("valid", valid), ("test", test))}
        summary = {
            "model": "hybrid", "family": "hybrid", "estimator": "interpolation", "order": None,
            "registered_model": registered_name("hybrid"), "parts": {name: float(w) for name, w in zip(names, weights)},
            "vocab_sha256": vocab.sha256, **{split: s.as_dict() for split, s in scores.items()},
        }
        with atomic_path(OUT) as tmp:
            tmp.mkdir()
            write_json(tmp / "hybrid.json", spec(list(zip(names, files)), weights, iterations))
            write_json(tmp / "scores.json", summary)
        plot_weights(on["valid"], on["test"], float(weights[0]), names, PLOT)
        run.log_params({"model": "hybrid", "family": "hybrid", "parts": ", ".join(names),
                        **{f"weight.{name}": f"{w:.6f}" for name, w in zip(names, weights)}})
        run.log_metrics({"em_iterations": iterations, **scores["valid"].metrics("valid"), **scores["test"].metrics("test")})
        for artifact in (f"{OUT}/hybrid.json", f"{OUT}/scores.json", PLOT):
            run.log_artifact(artifact)
        version = run.log_pyfunc_model(
            {"hybrid": f"{OUT}/hybrid.json", "neural": files[0], "ngram": files[1], "vocab": VOCAB, "tokenizer": f"{TOKENS}/tokenizer.json"},
            registered_name("hybrid"),
            pd.DataFrame({"context": ["<s> to be or not to"]}),
            {"top_k": 10},
            {"parts": ", ".join(f"{name}={w:.4f}" for name, w in zip(names, weights)),
             **version_tags(summary, OUT, TOKENS)},
        )
        run.tag_data_hashes("deps", [TOKENS, VOCAB, neural_dir, ngram_dir])
        run.tag_data_hashes("outs", [OUT])
    best_single = min(neural["test"]["ppl"], ngram["test"]["ppl"])
    print(f"hybrid: weights {names[0]} {weights[0]:.4f}, {names[1]} {weights[1]:.4f} ({iterations} EM steps); valid ppl "
          f"{scores['valid'].ppl:.2f}, test ppl {scores['test'].ppl:.2f} ({(scores['test'].ppl / best_single - 1) * 100:+.1f} % "
          f"against the better part); registered as {registered_name('hybrid')} version {version}")


if __name__ == "__main__":
    main()
