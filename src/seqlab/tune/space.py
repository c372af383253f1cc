"""The search space: what a search may vary, and how it is written. No Ray here.

The space is written the way SeqLab's configuration writes it, in params.yaml (``tune``) or in a JSON
file of the same shape::

    {"name": "LSTMModelWithAttention", "tokens": 20000000,                 # a trial's budget

     "optimization_config": {"lr": {"min": 1e-3, "max": 1e-2},          # log-uniform
                             "num_layers": {"min": 1, "max": 2},         # integer, inclusive
                             "hidden_dim": {"values": [512, 1024]}}}

A key is one of the seed's names (``lr``, ``num_layers``, ``hidden_dim``, ``embedding_dim``,
``batch_size``, ``dropout``) or any key of the task's architecture and training sections: ``model``
and ``train`` for the language model (``attention``, ``bptt``, ``dropout_rnn``, ...), ``seq2seq`` and
``seq2seq_train`` for the encoder-decoder (``rnn``, ``encoder_layers``, ``label_smoothing``, ...). ``{min, max}`` samples uniformly, log-uniformly for ``lr`` or with
``log: true``, in whole numbers where the key is a whole number; ``{values: [...]}`` picks one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from seqlab.errors import SeqLabError

SEED_KEYS = {  # the seed's names for the keys of params.yaml, by task
    "lm": {
        "lr": ("train.lr",),
        "num_layers": ("model.layers",),
        "hidden_dim": ("model.hidden_dim",),
        "embedding_dim": ("model.embed_dim",),
        "batch_size": ("train.batch_size",),
        "dropout": ("model.dropout_embed", "model.dropout_rnn", "model.dropout_out"),
    },
    "seq2seq": {
        "lr": ("seq2seq_train.lr",),
        "num_layers": ("seq2seq.encoder_layers", "seq2seq.decoder_layers"),
        "hidden_dim": ("seq2seq.hidden_dim",),
        "embedding_dim": ("seq2seq.embed_dim",),
        "batch_size": ("seq2seq_train.batch_size",),
        "dropout": ("seq2seq.dropout",),
    },
}
NOT_SEARCHED = {"tokens", "eval_every", "patience", "device", "seed", "amp", "eval_batch_size", "checkpoint_every", "cutoffs",
                "beam", "length_penalty"}  # decoding settings: a trial is judged by its valid loss
SPACE_FILE_KEYS = ("name", "tokens", "optimization_config")


def rounds(tokens: int, eval_every: int) -> int:
    """The rounds of ``eval_every`` tokens a budget of ``tokens`` holds (the last may be shorter)."""
    return -(-tokens // eval_every)


def searchable(sections: Mapping[str, Any], seed: Mapping[str, tuple[str, ...]]) -> dict[str, tuple[str, ...]]:
    """Every searchable key and the dotted params keys it sets: the ``seed`` names, then every key of
    ``sections`` (``{"model": names, "train": names}``) that a search may vary."""
    keys = dict(seed)
    for section, names in sections.items():
        keys.update({name: (f"{section}.{name}",) for name in names if name not in NOT_SEARCHED})
    return keys


@dataclass(frozen=True)
class Dimension:
    """One searched key: a range (``low``..``high``, maybe log-scaled) or a list of ``values``."""

    key: str
    targets: tuple[str, ...]  # the dotted params keys it sets
    values: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    def candidates(self) -> list:
        """The values every sample lies between or among: checked against the params before a search."""
        return list(self.values) if self.values is not None else [self.low, self.high]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_space(space: Mapping[str, Any], known: Mapping[str, tuple[str, ...]]) -> list[Dimension]:
    """The dimensions of an ``optimization_config`` mapping over the ``known`` keys (``searchable``);
    ValueError naming the key when malformed."""
    if not isinstance(space, Mapping):
        raise ValueError("optimization_config must be a mapping of key -> {min, max} or {values}")
    dimensions = []
    for key, spec in space.items():
        if key not in known:
            raise ValueError(f"{key}: unknown key; searchable keys: {', '.join(sorted(known))}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"{key}: expected {{min, max}} or {{values: [...]}} (got {spec!r})")
        if set(spec) == {"values"}:
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise ValueError(f"{key}: values must be a non-empty list (got {values!r})")
            bad = [v for v in values if not isinstance(v, (str, int, float, bool))]
            if bad:
                raise ValueError(f"{key}: values must be numbers, strings or booleans (got {bad[0]!r})")
            dimensions.append(Dimension(key, known[key], values=tuple(values)))
        elif {"min", "max"} <= set(spec) <= {"min", "max", "log"}:
            low, high, log = spec["min"], spec["max"], spec.get("log", key == "lr")
            if not (_number(low) and _number(high)):
                raise ValueError(f"{key}: min and max must be numbers (got min {low!r}, max {high!r})")
            if low > high:
                raise ValueError(f"{key}: min {low} is above its max {high}")
            if not isinstance(log, bool):
                raise ValueError(f"{key}: log must be true or false (got {log!r})")
            if log and low <= 0:
                raise ValueError(f"{key}: a log-uniform range needs min above 0 (got {low})")
            dimensions.append(Dimension(key, known[key], low=low, high=high, log=log))
        else:
            extra = sorted(set(spec) - {"min", "max", "log", "values"})
            raise ValueError(f"{key}: unknown key {extra[0]!r}" if extra else
                             f"{key}: expected {{min, max}} or {{values: [...]}} (got keys {sorted(spec)})")
    return dimensions


@dataclass(frozen=True)
class Space:
    name: str
    tokens: int  # the most tokens a trial trains on ...
    rounds: int  # ... in this many rounds of tune.eval_every tokens (ASHA's max_t)
    dimensions: list[Dimension]
    source: str  # where it was written, for error messages: "params.yaml: tune" or the JSON file


def load_space(tune_params, known: Mapping[str, tuple[str, ...]], params_path: str | Path = "params.yaml",
               section: str = "tune") -> Space:
    """The search space of params.yaml's ``section`` (``tune`` or ``seq2seq_tune``), or of the JSON
    file its ``space_file`` names."""
    if tune_params.space_file is None:
        return Space(tune_params.name, tune_params.tokens, tune_params.rounds,
                     parse_space(tune_params.optimization_config, known), f"{params_path}: {section}.optimization_config")
    path = Path(tune_params.space_file)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeqLabError(f"{path}: file not found ({params_path}: {section}.space_file)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SeqLabError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise SeqLabError(f"{path}: expected an object with keys {', '.join(SPACE_FILE_KEYS)}")
    for key in raw:
        if key == "epochs":
            raise SeqLabError(f"{path}: epochs: a trial's budget is counted in tokens now; write tokens (e.g. "
                              f"{tune_params.tokens}) instead")
        if key not in SPACE_FILE_KEYS:
            raise SeqLabError(f"{path}: {key}: unknown key; expected {', '.join(SPACE_FILE_KEYS)}")
    for key in SPACE_FILE_KEYS:
        if key not in raw:
            raise SeqLabError(f"{path}: missing key {key}")
    if not isinstance(raw["name"], str) or not raw["name"]:
        raise SeqLabError(f"{path}: name: expected a non-empty string (got {raw['name']!r})")
    tokens = raw["tokens"]
    if not isinstance(tokens, int) or isinstance(tokens, bool) or tokens < tune_params.eval_every:
        raise SeqLabError(f"{path}: tokens: expected a whole number of at least {section}.eval_every {tune_params.eval_every} (got {tokens!r})")
    count = rounds(tokens, tune_params.eval_every)
    if tune_params.grace_period > count:
        raise SeqLabError(f"{params_path}: {section}.grace_period: {tune_params.grace_period} exceeds the {count} rounds of {path}")
    try:
        dimensions = parse_space(raw["optimization_config"], known)
    except ValueError as err:
        raise SeqLabError(f"{path}: optimization_config: {err}") from None
    return Space(raw["name"], tokens, count, dimensions, f"{path}: optimization_config")


def overrides(config: Mapping[str, Any], dimensions: list[Dimension]) -> dict[str, Any]:
    """``{"train.lr": 0.004, "model.layers": 2, ...}``: what the train stage changes in params.yaml."""
    return {target: config[dim.key] for dim in dimensions if dim.key in config for target in dim.targets}
