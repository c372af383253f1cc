"""evaluate: every model's scores (the n-gram grid and the neural model) -> metrics/evaluate.json (DVC metrics),
metrics/leaderboard.csv, plots/perplexity.png."""

from seqlab import stage
from seqlab.errors import exit_on_error
from seqlab.io import atomic_path, read_json, write_json
from seqlab.leaderboard import dvc_metrics, leaderboard, plot_perplexity

MODELS, METRICS, LEADERBOARD, PLOT = "models", "metrics/evaluate.json", "metrics/leaderboard.csv", "plots/perplexity.png"


@exit_on_error
def main() -> None:
    params = stage.params()
    grid = params.ngram
    with stage.tracked("evaluate", params, "ngram") as run:
        ngrams = [f"{MODELS}/ngram/{e}-{o}/scores.json" for e in grid.estimators for o in grid.orders]
        board = leaderboard([read_json(path) for path in [*ngrams, f"{MODELS}/neural/scores.json"]])
        metrics = dvc_metrics(board)
        write_json(METRICS, metrics)
        with atomic_path(LEADERBOARD) as tmp:
            board.to_csv(tmp, index=False, float_format="%.6g")
        plot_perplexity(board, PLOT)
        best = board.iloc[0]
        run.log_metrics({"test_tokens": metrics["test_tokens"], "best_valid_ppl": best.valid_ppl, "best_test_ppl": best.test_ppl})
        run.set_tag("seqlab.best_model", best.model)
        run.log_artifact(LEADERBOARD)
        run.log_artifact(PLOT)
        run.tag_data_hashes("deps", [MODELS])
        print(board[["rank", "model", "valid_ppl", "test_ppl", "test_xent_bits"]].to_string(index=False))
        print(f"evaluate: {len(board)} models on the same {metrics['test_tokens']} test tokens "
              f"({metrics['test_oov_tokens']} OOV); best on valid: {best.model}")


if __name__ == "__main__":
    main()
