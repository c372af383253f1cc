"""The MLflow pyfunc face of every SeqLab model: next-token probabilities for each context.

Every family (n-gram, neural, hybrid) is registered as this one model from code: nothing pickled is
logged, and MLflow runs this file on load. ``load_context`` reads the version's own files from its
artifacts (``model.npz``, the weights-only ``model.pt`` or ``hybrid.json`` with its parts, ``vocab/``,
``tokenizer.json``) through ``seqlab.loading``, as ``seqlab predict`` does; torch is imported only
for a neural model or a hybrid with a neural part.

Input: a DataFrame with a ``context`` column of space-separated tokens (start it with ``<s>`` for
the beginning of a sequence). Output: for each context the ``top_k`` most likely next tokens
(param, default 10; 0 for the whole vocabulary) as rows ``context_index, token, probability``.
A neural model reads a context of any length window by window, in memory bounded by the model.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel

from seqlab.loading import DEFAULT_TOP_K


class NextToken(PythonModel):
    def load_context(self, context) -> None:
        from seqlab.loading import load_files

        folder = Path(next(iter(context.artifacts.values()))).parent
        self.loaded = load_files(folder, str(folder))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        top_k = int((params or {}).get("top_k", DEFAULT_TOP_K))
        vocab = self.loaded.vocab
        rows = []
        for i, text in enumerate(model_input["context"]):
            probs = np.exp(self.loaded.scorer.next_log_probs(vocab.encode(str(text).split())))
            order = np.argsort(-probs, kind="stable")
            order = order[probs[order] > 0]
            for token_id in order[: top_k or None]:
                rows.append((i, vocab.tokens[token_id], float(probs[token_id])))
        return pd.DataFrame(rows, columns=["context_index", "token", "probability"])


mlflow.models.set_model(NextToken())
