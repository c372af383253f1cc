"""Step 2, adjust counts: Kneser-Ney continuation counts for the lower orders.

The highest order keeps raw counts. A lower-order n-gram's adjusted count is the number of distinct
words seen before it (``N1+(. g)``), except for n-grams that start with ``<s>``: nothing can precede
them, so they keep their raw counts. Pruned tables carry the continuation counts of every counted
n-gram (``Table.extended``), as KenLM adjusts counts before it prunes.
"""

from __future__ import annotations

import numpy as np

from seqlab.ngram import spill
from seqlab.ngram.counts import Table


def adjusted_counts(tables: list[Table], bos: int) -> list[np.ndarray]:
    counts = [np.zeros(0)] * len(tables)
    counts[-1] = tables[-1].counts
    for k in range(len(tables) - 1, 0, -1):
        lower, higher = tables[k - 1], tables[k]
        continuation = lower.extended if lower.extended is not None else np.bincount(higher.suffix, minlength=len(lower))
        continuation = continuation.astype(lower.counts.dtype)  # the counts' width
        counts[k - 1] = adjusted(lower.counts, lower.first, continuation, bos)
        spill.forget(higher.suffix, lower.counts, lower.first)
    return counts


def adjusted(counts: np.ndarray, first: np.ndarray, continuation: np.ndarray, bos: int) -> np.ndarray:
    """A lower order's adjusted counts: the continuation counts, but raw counts where ``first`` is ``<s>``."""
    return np.where(first == bos, counts, continuation)
