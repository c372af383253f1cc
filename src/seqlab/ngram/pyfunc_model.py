"""The MLflow pyfunc face of an n-gram model: next-token probabilities for each context.

Logged as a model from code (no pickled Python objects): MLflow runs this file on load, and
``load_context`` reads the model's ``model.npz`` and ``vocab/`` artifacts.

Input: a DataFrame with a ``context`` column of space-separated tokens (start it with ``<s>`` for
the beginning of a sequence). Output: for each context the ``top_k`` most likely next tokens
(param, default 10; 0 for the whole vocabulary) as rows ``context_index, token, probability``.
"""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
from mlflow.pyfunc import PythonModel


class NGramNextToken(PythonModel):
    def load_context(self, context) -> None:
        from seqlab.ngram.model_file import load_model
        from seqlab.vocab import load_vocab

        self.vocab = load_vocab(context.artifacts["vocab"])
        self.model = load_model(context.artifacts["model"], self.vocab.sha256)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from seqlab.ngram.next_token import next_token_probs

        top_k = int((params or {}).get("top_k", 10))
        rows = []
        for i, text in enumerate(model_input["context"]):
            probs = next_token_probs(self.model, self.vocab, str(text).split())
            order = np.argsort(-probs, kind="stable")
            order = order[probs[order] > 0]
            for token_id in order[: top_k or None]:
                rows.append((i, self.vocab.tokens[token_id], float(probs[token_id])))
        return pd.DataFrame(rows, columns=["context_index", "token", "probability"])


mlflow.models.set_model(NGramNextToken())
