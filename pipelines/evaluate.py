"""evaluate: every model's scores -> metrics/evaluate.json (DVC metrics), metrics/leaderboard.csv, plots/perplexity.png."""

import math

import pandas as pd

from seqlab import stage
from seqlab.errors import SeqLabError, exit_on_error
from seqlab.io import atomic_path, read_json, write_json

MODELS, METRICS, LEADERBOARD, PLOT = "models", "metrics/evaluate.json", "metrics/leaderboard.csv", "plots/perplexity.png"


def finite(value: float):
    return value if math.isfinite(value) else "inf"


@exit_on_error
def main() -> None:
    params = stage.params()
    grid = params.ngram
    with stage.tracked("evaluate", params, "ngram") as run:
        summaries = [read_json(f"{MODELS}/ngram/{e}-{o}/scores.json") for e in grid.estimators for o in grid.orders]
        if len({s["test"]["fingerprint"] for s in summaries}) != 1:
            raise SeqLabError(f"{MODELS}: models were scored on different test tokens; rerun `dvc repro`")
        rows = []
        for s in summaries:
            row = {"model": s["model"], "family": s["family"], "estimator": s["estimator"], "order": s["order"]}
            for split in ("valid", "test"):
                row |= {f"{split}_{k}": s[split][k] for k in ("ppl", "xent_nats", "xent_bits", "bits_per_char")}
            row |= {"test_tokens": s["test"]["tokens"], "test_oov_tokens": s["test"]["oov_tokens"],
                    "test_zero_prob_tokens": s["test"]["zero_prob_tokens"]}
            rows.append(row)
        board = pd.DataFrame(rows).sort_values(["valid_ppl", "model"]).reset_index(drop=True)
        board.insert(0, "rank", range(1, len(board) + 1))
        metrics = {
            "test_tokens": int(board.test_tokens.iloc[0]),
            "test_oov_tokens": int(board.test_oov_tokens.iloc[0]),
            "best_model": board.model.iloc[0],
            "models": {r.model: {k: finite(getattr(r, k)) for k in ("valid_ppl", "test_ppl", "test_xent_nats", "test_xent_bits", "test_bits_per_char")}
                       for r in board.itertuples()},
        }
        write_json(METRICS, metrics)
        with atomic_path(LEADERBOARD) as tmp:
            board.to_csv(tmp, index=False, float_format="%.6g")
        plot(board, PLOT)
        best = board.iloc[0]
        run.log_metrics({"test_tokens": metrics["test_tokens"], "best_valid_ppl": best.valid_ppl, "best_test_ppl": best.test_ppl})
        run.set_tag("seqlab.best_model", best.model)
        run.log_artifact(LEADERBOARD)
        run.log_artifact(PLOT)
        run.tag_data_hashes("deps", [MODELS])
        print(board[["rank", "model", "valid_ppl", "test_ppl", "test_xent_bits"]].to_string(index=False))
        print(f"evaluate: {len(board)} models on the same {metrics['test_tokens']} test tokens "
              f"({metrics['test_oov_tokens']} OOV); best on valid: {best.model}")


def plot(board: pd.DataFrame, path: str) -> None:
    """Test perplexity against order, one line per estimator (infinite perplexities left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for estimator, rows in board.groupby("estimator", sort=False):
        rows = rows[rows.test_ppl.map(math.isfinite)].sort_values("order")
        if len(rows):
            ax.plot(rows.order, rows.test_ppl, marker="o", label=estimator)
    ax.set_yscale("log")
    ax.set_xticks(sorted(board.order.unique()))
    ax.set_xlabel("n-gram order")
    ax.set_ylabel("test perplexity (log scale)")
    ax.set_title(f"Perplexity on the same {int(board.test_tokens.iloc[0])} test tokens")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="estimator")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
