"""The leaderboard: every model's scores in one table, ranked by valid perplexity, and its plot."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from seqlab.errors import SeqLabError
from seqlab.io import atomic_path

METRICS = ("ppl", "xent_nats", "xent_bits", "bits_per_char")


def leaderboard(summaries: list[dict]) -> pd.DataFrame:
    """One row per model from its ``scores.json``; refuses models scored on different test tokens."""
    if len({s["test"]["fingerprint"] for s in summaries}) != 1:
        raise SeqLabError("models were scored on different test tokens; rerun `dvc repro`")
    rows = []
    for s in summaries:
        row = {"model": s["model"], "family": s["family"], "estimator": s["estimator"], "order": s["order"]}
        for split in ("valid", "test"):
            row |= {f"{split}_{k}": s[split][k] for k in METRICS}
        row |= {"test_tokens": s["test"]["tokens"], "test_oov_tokens": s["test"]["oov_tokens"],
                "test_zero_prob_tokens": s["test"]["zero_prob_tokens"]}
        rows.append(row)
    board = pd.DataFrame(rows).sort_values(["valid_ppl", "model"]).reset_index(drop=True)
    board.insert(0, "rank", range(1, len(board) + 1))
    return board


def dvc_metrics(board: pd.DataFrame) -> dict:
    """The DVC metrics file: token counts, the best model, and each model's figures (``inf`` as text)."""
    finite = lambda value: value if math.isfinite(value) else "inf"  # noqa: E731
    keys = ("valid_ppl", "test_ppl", "test_xent_nats", "test_xent_bits", "test_bits_per_char")
    return {
        "test_tokens": int(board.test_tokens.iloc[0]),
        "test_oov_tokens": int(board.test_oov_tokens.iloc[0]),
        "best_model": board.model.iloc[0],
        "models": {row.model: {k: finite(getattr(row, k)) for k in keys} for row in board.itertuples()},
    }


def plot_perplexity(board: pd.DataFrame, path: str | Path) -> None:
    """Test perplexity against order, one line per n-gram estimator (infinite perplexities left out);
    each neural model, which has no order, is a dashed horizontal line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ngram = board[board.family == "ngram"]
    for estimator, rows in ngram.groupby("estimator", sort=False):
        rows = rows[rows.test_ppl.map(math.isfinite)].sort_values("order")
        if len(rows):
            ax.plot(rows.order, rows.test_ppl, marker="o", label=estimator)
    for i, row in enumerate(board[board.family == "neural"].itertuples()):
        ax.axhline(row.test_ppl, linestyle="--", color=f"C{(len(ngram.estimator.unique()) + i) % 10}", label=f"{row.model} ({row.test_ppl:.1f})")
    ax.set_yscale("log")
    ax.set_xticks(sorted(ngram.order.unique()))
    ax.set_xlabel("n-gram order")
    ax.set_ylabel("test perplexity (log scale)")
    ax.set_title(f"Perplexity on the same {int(board.test_tokens.iloc[0])} test tokens")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(title="model", fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
