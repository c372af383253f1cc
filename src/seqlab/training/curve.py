"""A model's learning curve: train and valid loss per epoch, perplexity on the right axis."""

from __future__ import annotations

import math
from pathlib import Path

from seqlab.plots import pyplot, save
from seqlab.training.loop import Epoch


def plot_learning_curve(history: list[Epoch], path: str | Path, title: str) -> None:
    """Train and valid loss per epoch, valid perplexity on the right axis."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = pyplot()
    epochs = [e.epoch for e in history]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(epochs, [e.train_loss for e in history], marker="o", label="train loss")
    ax.plot(epochs, [e.valid_loss for e in history], marker="o", label="valid loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_xticks(epochs)
    ax.grid(True, alpha=0.3)
    best = min(history, key=lambda e: e.valid_loss)
    ax.plot([best.epoch], [best.valid_loss], marker="*", markersize=14, color="C1", linestyle="none",
            label=f"best: epoch {best.epoch}, valid ppl {best.valid_ppl:.1f}")
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
