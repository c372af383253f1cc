"""Step 5, ARPA: write backoff-form models (log10 probabilities and backoffs) and read them back."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from seqlab.errors import SeqLabError
from seqlab.io import atomic_path
from seqlab.ngram.estimate import BACKOFF_FORM, NGramModel

LOG10 = math.log(10)
NEVER = -99.0  # log10 probability written for <s>, which is never predicted


def _words_of(model: NGramModel) -> list[np.ndarray]:
    """For each order, the word ids of each n-gram (rows), recovered through the prefix ranks."""
    words = [model.tables[0].word[:, None]]
    for k in range(2, model.order + 1):
        table = model.tables[k - 1]
        words.append(np.hstack([words[k - 2][table.prefix], table.word[:, None]]))
    return words


def write_arpa(model: NGramModel, tokens: list[str], path: str | Path) -> None:
    if model.estimator not in BACKOFF_FORM:
        raise SeqLabError(f"estimator {model.estimator!r} has no backoff form; ARPA is written for {', '.join(BACKOFF_FORM)}")
    words = _words_of(model)
    vocab = np.array(tokens, dtype=object)
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        out.write("\n\\data\\\n")
        for k in range(1, model.order + 1):
            out.write(f"ngram {k}={len(model.tables[k - 1])}\n")
        for k in range(1, model.order + 1):
            out.write(f"\n\\{k}-grams:\n")
            logp = model.logp[k - 1] / LOG10
            if k == 1:
                logp = logp.copy()
                logp[model.bos] = NEVER
            logbo = model.logbo[k - 1] / LOG10
            text = [" ".join(row) for row in vocab[words[k - 1]]]
            if k < model.order:
                lines = (f"{p:.9g}\t{t}\t{b:.9g}\n" for p, t, b in zip(logp, text, logbo))
            else:
                lines = (f"{p:.9g}\t{t}\n" for p, t in zip(logp, text))
            out.writelines(lines)
        out.write("\n\\end\\\n")
