"""The search's picture: best valid perplexity of every trial against each searched parameter."""

from __future__ import annotations

import math
from pathlib import Path

from seqlab.plots import pyplot, save
from seqlab.tune.space import Space


def plot_search(table, space: Space, path: str | Path) -> None:
    """Best valid perplexity of each trial against each searched parameter, one panel per parameter."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    plt = pyplot()
    dims = [d for d in space.dimensions if len(set(d.candidates())) > 1] or [None]  # fixed keys have nothing to show
    columns = min(3, len(dims))
    rows = math.ceil(len(dims) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False, sharey=True)
    done = table.dropna(subset=["valid_ppl"])
    best = done.iloc[0] if len(done) else None
    styles = {"completed": dict(marker="o", color="C0"), "stopped by ASHA": dict(marker="o", facecolors="none", edgecolors="C0")}
    for ax, dim in zip(axes.flat, dims):
        if dim is None:
            ax.text(0.5, 0.5, "no parameter varies:\nnothing to compare", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        categorical = dim.values is not None
        order = {value: i for i, value in enumerate(dim.values)} if categorical else None
        position = (lambda v: order[v]) if categorical else float
        for status, style in styles.items():
            part = done[done["status"] == status]
            ax.scatter([position(v) for v in part[dim.key]], part["valid_ppl"], s=36, label=status, **style)
        if best is not None:
            ax.scatter([position(best[dim.key])], [best["valid_ppl"]], marker="*", s=220, color="C1", zorder=3, label="best")
        if categorical:
            ax.set_xticks(range(len(dim.values)), [str(v) for v in dim.values])
            ax.set_xlim(-0.5, len(dim.values) - 0.5)
        elif dim.log:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(dim.key)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(dims):]:
        ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("best valid perplexity")
    if dims[0] is not None:
        axes.flat[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{space.name}: {len(table)} trials, valid perplexity by searched parameter")
    fig.tight_layout()
    save(fig, path)
