"""The MLflow pyfunc face of the sequence-to-sequence models: the n best target sequences of each source.

Registered from code like ``pyfunc_model.py`` (nothing pickled): ``load_context`` reads the version's
own files from its artifacts (the weights-only ``model.pt``, ``source_vocab/``, ``target_vocab/`` and
``scores.json``, which says how a source is read) through ``seqlab.transduce.load_transducer``, as
``seqlab transduce`` does.

Input: a DataFrame with a ``source`` column (a word for grapheme-to-phoneme; tokens separated by
spaces otherwise). Params: ``beam`` (default 5; 1 is greedy) and ``nbest`` (default 1). Output: rows
``source_index, rank, hypothesis, score``: the hypotheses best first, tokens separated by spaces, with
their log-probability (natural log, ``</s>`` included).
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel

DEFAULTS = {"beam": 5, "nbest": 1}


class Transduce(PythonModel):
    def load_context(self, context) -> None:
        from seqlab.transduce import load_transducer

        self.loaded = load_transducer(Path(context.artifacts["model"]).parent)

    def predict(self, context, model_input: pd.DataFrame, params: dict | None = None) -> pd.DataFrame:
        from seqlab.errors import SeqLabError
        from seqlab.transduce import transduce

        settings = {**DEFAULTS, **(params or {})}
        beam, nbest = int(settings["beam"]), int(settings["nbest"])
        if beam < 1 or not 1 <= nbest <= beam:
            raise SeqLabError(f"params: beam must be at least 1 and nbest between 1 and beam (got beam {beam}, nbest {nbest})")
        loaded = self.loaded
        sources = [loaded.read(str(text)) for text in model_input["source"]]
        found = transduce(loaded.model, sources, loaded.source_vocab, loaded.target_vocab, loaded.max_length, beam, nbest)
        rows = [(i, rank, " ".join(tokens), hyp.score) for i, hyps in enumerate(found) for rank, (tokens, hyp) in enumerate(hyps, start=1)]
        return pd.DataFrame(rows, columns=["source_index", "rank", "hypothesis", "score"])


mlflow.models.set_model(Transduce())
