"""evaluate: every model the pipeline built (the n-gram grid, the tuned neural model, the baselines, the
hybrid), scored on the same test tokens -> metrics/metrics.json (DVC metrics), metrics/leaderboard.csv,
metrics/learning_curves.csv, plots/perplexity.png, plots/learning_curves.png."""

from seqlab import paths, stage
from seqlab.errors import exit_on_error
from seqlab.io import atomic_path, write_json
from seqlab.leaderboard import dvc_metrics, leaderboard, learning_curves, plot_learning_curves, plot_perplexity
from seqlab.scoring import read_summary

METRICS, LEADERBOARD, CURVES = "metrics/metrics.json", paths.LEADERBOARD, "metrics/learning_curves.csv"
PLOT, CURVES_PLOT = "plots/perplexity.png", "plots/learning_curves.png"


@exit_on_error
def main() -> None:
    params = stage.params()
    grid = params.ngram
    with stage.tracked("evaluate", params, "ngram", "baselines", outs=(METRICS, LEADERBOARD, CURVES, PLOT, CURVES_PLOT)) as run:
        neural = stage.neural_folders(params)
        folders = [paths.ngram_folder(e, o) for e in grid.estimators for o in grid.orders] + [*neural.values(), paths.HYBRID]
        summaries = {folder: read_summary(folder) for folder in folders}
        board = leaderboard(summaries)
        metrics = dvc_metrics(board)
        write_json(METRICS, metrics)
        with atomic_path(LEADERBOARD) as tmp:
            board.to_csv(tmp, index=False, float_format="%.6g")
        histories = {role: summaries[folder]["history"] for role, folder in neural.items()}
        with atomic_path(CURVES) as tmp:
            learning_curves(histories).to_csv(tmp, index=False, float_format="%.6g")
        plot_perplexity(board, PLOT)
        plot_learning_curves({summaries[folder]["model"]: histories[role] for role, folder in neural.items()}, CURVES_PLOT)
        best = board.iloc[0]
        run.log_metrics({"test_tokens": metrics["test_tokens"], "best_valid_ppl": best.valid_ppl, "best_test_ppl": best.test_ppl})
        run.set_tag("seqlab.best_model", best.model)
        for artifact in (LEADERBOARD, CURVES, PLOT, CURVES_PLOT):
            run.log_artifact(artifact)
        run.tag_data_hashes("deps", folders)
        print(board[["rank", "model", "valid_ppl", "test_ppl", "test_xent_bits"]].to_string(index=False))
        print(f"evaluate: {len(board)} models on the same {metrics['test_tokens']} test tokens "
              f"({metrics['test_oov_tokens']} OOV, </s> counted); best on valid: {best.model}")


if __name__ == "__main__":
    main()
