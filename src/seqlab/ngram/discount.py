"""Step 3, discounts from counts of counts (Chen & Goodman 1998, eqs. 26-27).

``Y = n1 / (n1 + 2 n2)``; Kneser-Ney subtracts ``D = Y`` from every count; modified Kneser-Ney
subtracts ``D1 = 1 - 2Y n2/n1``, ``D2 = 2 - 3Y n3/n2`` or ``D3+ = 3 - 4Y n4/n3`` by the count.
Where the counts of counts leave a discount undefined or outside ``(0, i]`` (tiny or odd corpora),
the order falls back to KenLM's ``--discount_fallback`` values: 0.5, 1.0, 1.5 (KN: 0.5).
"""

from __future__ import annotations

import numpy as np

FALLBACK = np.array([0.5, 1.0, 1.5])


def counts_of_counts(counts: np.ndarray, upto: int = 4) -> np.ndarray:
    """``n[i]`` = number of n-grams seen exactly i times, for i = 0..upto (n[0] unused)."""
    positive = counts[counts > 0]
    return np.bincount(np.minimum(positive, upto + 1), minlength=upto + 2)[: upto + 1].astype(np.float64)


def kneser_ney(counts: np.ndarray) -> np.ndarray:
    """One discount, returned as ``[D, D, D]``."""
    return from_counts_of_counts(counts_of_counts(counts), modified=False)


def modified_kneser_ney(counts: np.ndarray) -> np.ndarray:
    """``[D1, D2, D3+]``."""
    return from_counts_of_counts(counts_of_counts(counts), modified=True)


def from_counts_of_counts(n: np.ndarray, modified: bool) -> np.ndarray:
    """The discounts of ``counts_of_counts``' ``n`` (summed over the parts of a distributed count)."""
    if not modified:
        if n[1] > 0 and n[2] > 0:
            return np.full(3, n[1] / (n[1] + 2 * n[2]))
        return np.full(3, FALLBACK[0])
    if not np.all(n[1:] > 0):
        return FALLBACK.copy()
    y = n[1] / (n[1] + 2 * n[2])
    d = np.array([i - (i + 1) * y * n[i + 1] / n[i] for i in (1, 2, 3)])
    if np.all((d > 0) & (d <= np.array([1, 2, 3]))):
        return d
    return FALLBACK.copy()


def apply(counts: np.ndarray, discounts: np.ndarray) -> np.ndarray:
    """The discount of each count (0 for unseen)."""
    table = np.concatenate([[0.0], discounts])
    return table[np.minimum(counts, 3)]
