"""The MLflow pyfunc face of an n-gram model or a hybrid: next-token probabilities for each context.

Logged as a model from code (no pickled Python objects): MLflow runs this file on load, and
``load_context`` reads the model's files from its artifacts (``model.npz`` or ``hybrid.json`` with its
parts, ``vocab/``, ``tokenizer.json``) the way ``seqlab predict`` does.

Input: a DataFrame with a ``context`` column of space-separated tokens (start it with ``<s>`` for
the beginning of a sequence). Output: for each context the ``top_k`` most likely next tokens
(param, default 10; 0 for the whole vocabulary) as rows ``context_index, token, probability``.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class NextToken(PythonModel):
    def load_context(self, context) -> None:
        from seqlab.generate import load_files

        folder = Path(next(iter(context.artifacts.values()))).parent
        self.loaded = load_files(folder, str(folder))

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from seqlab.generate import next_log_probs

        top_k = int((params or {}).get("top_k", 10))
        vocab = self.loaded.vocab
        rows = []
        for i, text in enumerate(model_input["context"]):
            probs = np.exp(next_log_probs(self.loaded, vocab.encode(str(text).split())))
            order = np.argsort(-probs, kind="stable")
            order = order[probs[order] > 0]
            for token_id in order[: top_k or None]:
                rows.append((i, vocab.tokens[token_id], float(probs[token_id])))
        return pd.DataFrame(rows, columns=["context_index", "token", "probability"])


mlflow.models.set_model(NextToken())
