"""The search's result as params: what the train (or seq2seq) stage and its baselines start from. No Ray here."""

from __future__ import annotations

from pathlib import Path

from seqlab.config import Params, with_changes
from seqlab.errors import SeqLabError
from seqlab.io import read_json


def tuned(params: Params, best_config: str | Path, task: str = "lm") -> tuple[Params, dict]:
    """``params`` with the search's best configuration (``best_config``'s overrides) put into
    ``task``'s sections (``model`` and ``train``, or ``seq2seq`` and ``seq2seq_train``), validated;
    and the overrides."""
    best = read_json(best_config)
    changes = best.get("overrides") if isinstance(best, dict) else None
    if not isinstance(changes, dict):
        raise SeqLabError(f"{best_config}: overrides: missing or not an object")
    return with_changes(params, changes, f"{best_config}: overrides", task), changes
