"""Next-token distributions from an n-gram model, through the one scoring path."""

from __future__ import annotations

import numpy as np

from seqlab.ngram.counts import Segments
from seqlab.ngram.estimate import NGramModel
from seqlab.vocab import BOS, Vocab


def next_token_probs(model: NGramModel, vocab: Vocab, context: list[str]) -> np.ndarray:
    """``p(w | context)`` for every vocabulary id ``w`` (0 for ``<s>``); sums to 1.

    Only the last order-1 tokens matter; a context starting with ``<s>`` is a sequence start."""
    ids = vocab.encode(context)[-(model.order - 1) :] if model.order > 1 else []
    bos = vocab.index[BOS]
    candidates = np.array([w for w in range(len(vocab)) if w != bos], dtype=np.int64)
    width = len(ids) + 1
    tokens = np.empty((len(candidates), width), dtype=np.int64)
    tokens[:, :-1] = ids
    tokens[:, -1] = candidates
    segments = Segments(
        tokens.ravel(), np.repeat(np.arange(len(candidates)), width), np.tile(np.arange(width), len(candidates))
    )
    probs = np.zeros(len(vocab))
    probs[candidates] = np.exp(model.log_probs(segments)[width - 1 :: width])
    return probs
