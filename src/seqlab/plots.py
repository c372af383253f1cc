"""What every plot shares: a headless pyplot, and one way to save a figure (PNG, written atomically,
the figure closed), so a failed run never leaves half a picture."""

from __future__ import annotations

from pathlib import Path

from seqlab.io import atomic_path


def pyplot():
    """matplotlib's pyplot on the Agg backend: no display needed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, path: str | Path, dpi: int = 100) -> None:
    """Write ``fig`` to ``path`` as PNG in one rename, and close it."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    pyplot().close(fig)
