"""A model's learning curve: train and valid loss by tokens seen, perplexity on the right axis."""

from __future__ import annotations

import math
from pathlib import Path

from seqlab.plots import pyplot, save
from seqlab.training.loop import Round


def plot_learning_curve(history: list[Round], path: str | Path, title: str) -> None:
    """Train and valid loss at the end of every round, by tokens seen; perplexity on the right axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = pyplot()
    seen = [r.tokens / 1e6 for r in history]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(seen, [r.train_loss for r in history], marker="o", label="train loss (over the round)")
    ax.plot(seen, [r.valid_loss for r in history], marker="o", label="valid loss")
    ax.set_xlabel("train tokens seen (millions)")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.grid(True, alpha=0.3)
    best = min(history, key=lambda r: r.valid_loss)
    ax.plot([best.tokens / 1e6], [best.valid_loss], marker="*", markersize=14, color="C1", linestyle="none",
            label=f"best: round {best.round}, valid ppl {best.valid_ppl:.1f}")
    ax.legend(loc="upper right")
    right = ax.twinx()  # the same scale read as perplexity: ppl = exp(nats)
    low, high = ax.get_ylim()
    right.set_ylim(math.exp(low), math.exp(high))
    right.set_yscale("log")
    right.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)))
    right.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    right.yaxis.set_minor_formatter(NullFormatter())
    right.set_ylabel("perplexity")
    ax.set_title(f"{title}: learning curve")
    fig.tight_layout()
    save(fig, path)
