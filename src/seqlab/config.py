"""Typed params, loaded from params.yaml and validated once at stage start.

Every key is required and unknown keys are rejected, so a typo fails loudly instead of silently
falling back to a default. Errors name the file and the dotted key on one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Iterable, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from seqlab.errors import SeqLabError
from seqlab.tune.space import SEED_KEYS, parse_space, rounds, searchable


@dataclass(frozen=True)
class TaskSections:
    """The params sections of one task: its architecture, its training and its search."""

    arch: str
    train: str
    search: str


TASKS = {"lm": TaskSections("model", "train", "tune"), "seq2seq": TaskSections("seq2seq", "seq2seq_train", "seq2seq_tune")}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataParams(_Section):
    source: Literal["shakespeare", "directory", "file"]
    path: str = Field(min_length=1)  # corpus directory (train/valid/test.txt) or single file
    valid_plays: list[str]  # shakespeare only: whole plays held out
    test_plays: list[str]
    valid_fraction: float = Field(gt=0, lt=1)  # file only: split by ratio
    test_fraction: float = Field(gt=0, lt=1)
    seed: int

    @model_validator(mode="after")
    def _check(self) -> "DataParams":
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid_fraction + test_fraction must be below 1")
        if self.source == "shakespeare" and not (self.valid_plays and self.test_plays):
            raise ValueError("valid_plays and test_plays each need at least one play")
        both = sorted(set(self.valid_plays) & set(self.test_plays))
        if both:
            raise ValueError(f"plays both in valid_plays and test_plays: {', '.join(both)}")
        return self

    @field_validator("valid_plays", "test_plays")
    @classmethod
    def _known_plays(cls, plays: list[str]) -> list[str]:
        from seqlab.corpus import shakespeare_plays

        known = shakespeare_plays()
        for play in plays:
            if play not in known:
                raise ValueError(f"unknown play {play!r}; known plays: {', '.join(known)}")
        return plays


class TokenizeParams(_Section):
    kind: Literal["word", "char", "bpe"]
    lowercase: bool
    pattern: str = Field(min_length=1)  # word tokens: a regular expression matched left to right
    bpe_vocab_size: int = Field(ge=260, le=1_000_000)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str) -> str:
        try:
            compiled = re.compile(value)
        except re.error as err:
            raise ValueError(f"not a valid regular expression: {err}") from None
        if compiled.fullmatch(""):
            raise ValueError("the pattern matches the empty string, so every position would be a token; use + rather than *")
        return value


class VocabParams(_Section):
    min_freq: int = Field(ge=1)
    max_size: int | None = Field(ge=4)  # including the specials; null for no cap


class ValidateParams(_Section):
    min_tokens: int = Field(ge=0)  # bounds on tokens per line
    max_tokens: int = Field(ge=1)
    max_oov_rate: float = Field(ge=0, le=1)

    @model_validator(mode="after")
    def _check(self) -> "ValidateParams":
        if self.min_tokens > self.max_tokens:
            raise ValueError("min_tokens must not exceed max_tokens")
        return self


SIZE_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text: str) -> int:
    """Bytes of a size such as ``512M``, ``2G`` or ``1048576`` (binary units)."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)B?\s*", str(text), re.IGNORECASE)
    if not match:
        raise ValueError(f"expected bytes or a size such as 512M or 2G (got {text!r})")
    return int(float(match.group(1)) * SIZE_UNITS[match.group(2).upper()])


class NgramParams(_Section):
    orders: list[int] = Field(min_length=1)  # the grid: every order ...
    estimators: list[str] = Field(min_length=1)  # ... times every estimator
    max_order: int = Field(ge=1, le=10)
    addk_k: float | None = Field(gt=0)  # null: tune k on valid
    cutoffs: list[int]  # per order: drop n-grams seen this often or less; [] for none
    memory: str  # counting's budget, as lmplz's -S: bytes or a size such as 512M or 2G
    engine: Literal["local", "ray"]  # ray: counting and Kneser-Ney estimation as Ray tasks, on tune.address's cluster
    partitions: int | None = Field(ge=1)  # the Ray engine's partitions; null: the cluster's CPUs, or more so that merging one fits memory

    @field_validator("memory")
    @classmethod
    def _memory(cls, memory: str) -> str:
        size = parse_size(memory)
        if size < 1 << 20:
            raise ValueError(f"at least 1M is needed (got {memory!r})")
        return memory

    @property
    def memory_bytes(self) -> int:
        return parse_size(self.memory)

    @field_validator("cutoffs")
    @classmethod
    def _cutoffs(cls, cutoffs: list[int]) -> list[int]:
        if cutoffs and cutoffs[0] != 0:
            raise ValueError("unigrams are never pruned: the first cut-off must be 0")
        if any(c < 0 for c in cutoffs) or any(b < a for a, b in zip(cutoffs, cutoffs[1:])):
            raise ValueError(f"cut-offs must be non-negative and non-decreasing (got {cutoffs})")
        return cutoffs

    @field_validator("estimators")
    @classmethod
    def _known_estimators(cls, estimators: list[str]) -> list[str]:
        from seqlab.ngram import ESTIMATORS

        for name in estimators:
            if name not in ESTIMATORS:
                raise ValueError(f"unknown estimator {name!r}; expected one of {', '.join(ESTIMATORS)}")
        if len(set(estimators)) != len(estimators):
            raise ValueError("estimators are listed twice")
        return estimators

    @model_validator(mode="after")
    def _check(self) -> "NgramParams":
        bad = [order for order in self.orders if not 1 <= order <= self.max_order]
        if bad:
            raise ValueError(f"orders must lie in 1..max_order={self.max_order} (got {bad[0]})")
        if len(set(self.orders)) != len(self.orders):
            raise ValueError("orders are listed twice")
        return self


class ModelParams(_Section):
    kind: Literal["lstm_attention", "transformer", "feedforward"]
    rnn: Literal["lstm", "gru"]
    attention: Literal["none", "dot", "general", "additive", "multihead"]
    heads: int = Field(ge=1)
    memory: int = Field(ge=1)  # states before each position that attention sees (feedforward: that it reads)
    embed_dim: int = Field(ge=1)
    hidden_dim: int = Field(ge=1)
    layers: int = Field(ge=1)
    dropout_embed: float = Field(ge=0, lt=1)
    dropout_rnn: float = Field(ge=0, lt=1)
    dropout_out: float = Field(ge=0, lt=1)
    weight_drop: float = Field(ge=0, lt=1)  # DropConnect on the recurrent weights (lstm_attention)
    tie_weights: bool
    output: Literal["full", "adaptive"]
    cutoffs: list[int]  # adaptive softmax cluster edges, increasing, below the vocabulary size
    div_value: float = Field(gt=1)
    ff_dim: int | None = Field(ge=1)  # transformer; null matches the LSTM-attention parameter count

    @model_validator(mode="after")
    def _check(self) -> "ModelParams":
        if self.tie_weights and self.output != "full":
            raise ValueError("tie_weights needs output: full (an adaptive softmax has no single decoder matrix)")
        if self.output == "adaptive" and (not self.cutoffs or any(b <= a for a, b in zip(self.cutoffs, self.cutoffs[1:])) or self.cutoffs[0] < 1):
            raise ValueError(f"cutoffs must be positive and increasing for output: adaptive (got {self.cutoffs})")
        width = self.embed_dim if self.kind == "transformer" else self.hidden_dim
        if (self.kind == "transformer" or self.attention == "multihead") and width % self.heads:
            raise ValueError(f"heads must divide the attention width {width} (got {self.heads})")
        return self


class LoopParams(_Section):
    """What the trainer loop (``seqlab.training.fit``) reads, for every task."""

    batch_size: int = Field(ge=1)
    tokens: int = Field(ge=1)  # the budget: target tokens seen
    eval_every: int = Field(ge=1)  # tokens per round: valid loss, best checkpoint, early stopping
    lr: float = Field(gt=0)
    schedule: Literal["cosine", "plateau"]  # cosine from lr to 0 over the budget | reduce on a plateau
    clip: float = Field(gt=0)  # gradient-norm clipping
    patience: int = Field(ge=1)  # early stopping: rounds without a better valid loss
    lr_factor: float = Field(gt=0, lt=1)  # plateau: lr *= lr_factor ...
    lr_patience: int = Field(ge=0)  # ... after this many rounds without improvement
    seed: int
    device: Literal["auto", "cpu", "cuda"]
    amp: Literal[False, True, "cpu"]  # bf16 autocast: true on CUDA; cpu on CUDA and on CPUs with native bf16 too
    eval_batch_size: int = Field(ge=1)
    checkpoint_every: int = Field(ge=1)  # steps between resume checkpoints


class TrainParams(LoopParams):
    """The language model's training: the loop's settings and the BPTT window."""

    bptt: int = Field(ge=1)  # tokens per truncated-BPTT window (steps = tokens / (batch_size * bptt))
    workers: int = Field(ge=1)  # 1: this process; N: Ray Train's TorchTrainer, N DDP workers sharing batch_size's rows

    @model_validator(mode="after")
    def _check(self) -> "TrainParams":
        if self.batch_size % self.workers:
            raise ValueError(f"workers: {self.workers} must divide batch_size: {self.batch_size} (each worker takes an equal share of the rows)")
        return self

    @property
    def eval_window(self) -> int:
        """Tokens per scoring call; any value gives the same scores, since state carries across."""
        return max(self.bptt, 64)


class TuneParams(_Section):
    """A task's search (``tune`` for the language model, ``seq2seq_tune`` for the encoder-decoder);
    ``name``, ``tokens`` and ``optimization_config`` keep the shape of a search-space JSON file
    (``space_file``), which replaces them when set."""

    task: ClassVar[str] = "lm"  # whose architecture and training sections the search varies

    name: str = Field(min_length=1)
    tokens: int = Field(ge=1)  # the most tokens a trial trains on (its budget, as train.tokens)
    eval_every: int = Field(ge=1)  # tokens per round: a trial reports its valid loss after each (ASHA's time)
    optimization_config: dict[str, dict]  # key -> {min, max[, log]} or {values: [...]}
    space_file: str | None = Field(min_length=1)
    num_samples: int = Field(ge=1)  # trials
    search: Literal["random", "optuna"]  # random sampling or Optuna's TPE
    grace_period: int = Field(ge=1)  # ASHA: rounds before a trial can be stopped ...
    reduction_factor: float = Field(gt=1)  # ... and the share kept at each rung is 1/this
    train_tokens: int | None = Field(ge=100)  # trials train on the first this-many train (target) tokens; null for all
    cpus_per_trial: float = Field(gt=0)
    gpus_per_trial: float = Field(ge=0)  # fractions share a GPU
    gpu_fallback: bool  # no GPU in the cluster: run trials on CPUs instead of failing
    max_concurrent: int | None = Field(ge=1)  # null: as many as the resources allow
    max_failures: int = Field(ge=0)  # retries of a crashed trial, from its last checkpoint
    address: str | None = Field(min_length=1)  # an existing Ray cluster; null: RAY_ADDRESS, else a local one
    storage: str | None = Field(min_length=1)  # trial checkpoints: a shared path or URI on a multi-node cluster
    seed: int

    @property
    def rounds(self) -> int:
        """ASHA's max_t: the most rounds a trial runs."""
        return rounds(self.tokens, self.eval_every)

    @field_validator("optimization_config")
    @classmethod
    def _space(cls, space: dict[str, dict]) -> dict[str, dict]:
        parse_space(space, searchable_keys(cls.task))
        return space

    @model_validator(mode="after")
    def _check(self) -> "TuneParams":
        if self.eval_every > self.tokens:
            raise ValueError(f"eval_every {self.eval_every} exceeds tokens {self.tokens}")
        if self.grace_period > self.rounds:
            raise ValueError(f"grace_period {self.grace_period} exceeds the {self.rounds} rounds of tokens / eval_every")
        return self


class PairsParams(_Section):
    """The sequence-to-sequence task's data."""

    source: Literal["cmudict", "directory"]  # the embedded pronouncing dictionary | {split}.tsv or .src/.tgt files
    path: str = Field(min_length=1)  # directory: where the split files are
    source_chars: bool  # directory: the source side is read as characters (a word per line)
    stress: Literal["keep", "strip"]  # cmudict: the vowels' stress digits
    valid_fraction: float = Field(gt=0, lt=1)  # cmudict: shares of headwords for valid and test
    test_fraction: float = Field(gt=0, lt=1)
    seed: int
    max_length: int = Field(ge=1)  # tokens on either side at most; longer pairs are refused
    min_freq: int = Field(ge=1)  # rarer train symbols become <unk>
    max_oov_rate: float = Field(ge=0, le=1)  # valid/test source OOV rate ceiling

    @model_validator(mode="after")
    def _check(self) -> "PairsParams":
        if self.valid_fraction + self.test_fraction >= 1:
            raise ValueError("valid_fraction + test_fraction must be below 1")
        return self


class Seq2SeqParams(_Section):
    """The encoder-decoder (``seqlab.models.seq2seq``, or ``seq2seq_transformer`` with ``kind: transformer``)."""

    kind: Literal["rnn", "transformer"]  # the recurrent encoder-decoder with attention | the Transformer baseline
    rnn: Literal["lstm", "gru"]
    attention: Literal["none", "dot", "general", "additive", "multihead"]
    heads: int = Field(ge=1)
    bidirectional: bool
    embed_dim: int = Field(ge=1)
    hidden_dim: int = Field(ge=2)
    encoder_layers: int = Field(ge=1)
    decoder_layers: int = Field(ge=1)
    dropout: float = Field(ge=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "Seq2SeqParams":
        if self.bidirectional and self.hidden_dim % 2:
            raise ValueError(f"a bidirectional encoder splits hidden_dim between its directions: it must be even (got {self.hidden_dim})")
        if (self.attention == "multihead" or self.kind == "transformer") and self.hidden_dim % self.heads:
            raise ValueError(f"heads must divide hidden_dim {self.hidden_dim} (got {self.heads})")
        return self


class Seq2SeqTrainParams(LoopParams):
    """The encoder-decoder's training and decoding."""

    teacher_forcing: float = Field(gt=0, le=1)  # 1: always the reference token; below: scheduled sampling
    label_smoothing: float = Field(ge=0, lt=1)
    beam: int = Field(ge=1)  # decoding: 1 is greedy
    length_penalty: float = Field(ge=0)  # GNMT's alpha; 0 ranks by summed log-probability
    side_by_side: int | Literal["auto"]  # models the seq2seq stage trains at once, each on cores / N threads; auto: up to one per core

    @field_validator("side_by_side", mode="before")
    @classmethod
    def _models_at_once(cls, value: object) -> object:
        if value != "auto" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError("a number of models at once (1 or more), or auto")
        return value


class Seq2SeqTuneParams(TuneParams):
    """The encoder-decoder's search: the same keys, over the seq2seq and seq2seq_train sections."""

    task: ClassVar[str] = "seq2seq"


class HybridParams(_Section):
    # the estimator interpolated with the best neural model (its best order on valid); best: every
    # estimator's best order is tried and the one whose mix is best on valid is kept
    ngram: str = Field(min_length=1)


class RegisterParams(_Section):
    # a champion scored on other test tokens or another vocabulary cannot be compared:
    # challenger (keep the champion) | promote (the new best takes over)
    on_new_test_set: Literal["challenger", "promote"]


class TrackingParams(_Section):
    experiment: str = Field(min_length=1)


class Params(_Section):
    data: DataParams
    tokenize: TokenizeParams
    vocab: VocabParams
    validate_: ValidateParams = Field(alias="validate")
    ngram: NgramParams
    model: ModelParams
    train: TrainParams
    tune: TuneParams
    baselines: dict[str, dict]  # name -> changes to the tuned model and train sections, e.g. {model: {attention: none}}
    hybrid: HybridParams
    pairs: PairsParams
    seq2seq: Seq2SeqParams
    seq2seq_train: Seq2SeqTrainParams
    seq2seq_tune: Seq2SeqTuneParams
    seq2seq_baselines: dict[str, dict]  # name -> changes to the seq2seq section, e.g. {attention: none}
    register_: RegisterParams = Field(alias="register")
    tracking: TrackingParams

    @model_validator(mode="after")
    def _check(self) -> "Params":
        if not self.baselines:
            raise ValueError("baselines: at least one entry (the leaderboard compares the tuned model with them)")
        for name, changes in self.baselines.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"baselines.{name}: a name is lower-case letters, digits and _")
            try:
                with_changes(self, dotted(changes, f"baselines.{name}"), f"baselines.{name}")
            except SeqLabError as err:
                raise ValueError(str(err)) from None
        for name, changes in self.seq2seq_baselines.items():
            if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
                raise ValueError(f"seq2seq_baselines.{name}: a name is lower-case letters, digits and _")
            try:
                seq2seq_with(self, name)
            except SeqLabError as err:
                raise ValueError(str(err)) from None
        if self.hybrid.ngram != "best" and self.hybrid.ngram not in self.ngram.estimators:
            raise ValueError(f"hybrid.ngram: {self.hybrid.ngram!r} is neither best nor among ngram.estimators {self.ngram.estimators}")
        return self


def load_params(path: str | Path = "params.yaml", overrides: Mapping[str, object] | None = None) -> Params:
    """Load and validate the whole params file, with ``{"section.key": value}`` ``overrides`` put in
    first (as ``dvc exp run -S`` would); raise SeqLabError naming the file and key."""
    path = Path(path)
    if not path.exists():
        raise SeqLabError(f"{path}: file not found")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise SeqLabError(f"{path}: not valid YAML: {first}") from None
    if not isinstance(raw, dict):
        raise SeqLabError(f"{path}: expected a mapping of sections at the top level")
    raw = put(raw, overrides or {}, str(path))
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        raise SeqLabError(describe_validation_error(path, err)) from None


def dotted(changes: Mapping, source: str) -> dict[str, object]:
    """``{model: {attention: none}}`` -> ``{"model.attention": "none"}`` (two levels: section, key)."""
    flat = {}
    for section, keys in changes.items():
        if not isinstance(keys, Mapping):
            raise SeqLabError(f"{source}.{section}: expected a mapping of keys to values")
        flat |= {f"{section}.{key}": value for key, value in keys.items()}
    return flat


def put(sections: Mapping[str, Mapping], changes: Mapping[str, object], source: str,
        only: Iterable[str] | None = None) -> dict[str, dict]:
    """The one way to apply dotted changes (``{"section.key": value}``, as ``dvc exp run -S`` writes
    them): a copy of ``sections`` with the changes put in, before any validation. A change to a section
    that is not there is refused naming ``source`` and the key; so is any key outside ``only``'s
    sections when given. Otherwise an unknown key is left to the schema, which names it."""
    out = {name: dict(keys) if isinstance(keys, Mapping) else keys for name, keys in sections.items()}
    allowed = set(out if only is None else only)
    for key, value in changes.items():
        section, _, name = key.partition(".")
        if only is not None and (section not in allowed or name not in out.get(section, {})):
            raise SeqLabError(f"{source}.{key}: unknown key (changes apply to {' and '.join(only)})")
        if not isinstance(out.get(section), dict):
            raise SeqLabError(f"{source}: {key}: no section {section!r} to override")
        out[section][name] = value
    return out


def with_changes(params: Params, changes: Mapping[str, object], source: str, task: str = "lm") -> Params:
    """``params`` with ``{"section.key": value}`` put into ``task``'s architecture and training sections
    (``model``/``train``, or ``seq2seq``/``seq2seq_train``) and validated with their schema; errors
    name ``source`` and the key."""
    names = (TASKS[task].arch, TASKS[task].train)
    sections = put({name: getattr(params, name).model_dump() for name in names}, changes, source, only=names)
    try:
        update = {name: Params.model_fields[name].annotation.model_validate(sections[name]) for name in names}
    except ValidationError as err:
        raise SeqLabError(describe_validation_error(source, err)) from None
    return params.model_copy(update=update)


def seq2seq_with(params: Params, baseline: str | None) -> Seq2SeqParams:
    """The seq2seq section, with the changes of ``seq2seq_baselines[baseline]`` when given."""
    if baseline is None:
        return params.seq2seq
    if baseline not in params.seq2seq_baselines:
        raise SeqLabError(f"params.yaml: seq2seq_baselines.{baseline}: no such baseline "
                          f"(have: {', '.join(params.seq2seq_baselines) or 'none'})")
    source = f"seq2seq_baselines.{baseline}"  # checked when params.yaml is read, whose error names the file
    changes = params.seq2seq_baselines[baseline]
    if not isinstance(changes, Mapping):
        raise SeqLabError(f"{source}: expected a mapping of seq2seq keys to values")
    sections = put({"seq2seq": params.seq2seq.model_dump()}, {f"seq2seq.{k}": v for k, v in changes.items()}, source, only=("seq2seq",))
    try:
        return Seq2SeqParams.model_validate(sections["seq2seq"])
    except ValidationError as err:
        raise SeqLabError(describe_validation_error(source, err)) from None


def searchable_keys(task: str = "lm") -> dict[str, tuple[str, ...]]:
    """What a search of ``task`` may vary: the seed's names and the keys of its architecture and
    training sections."""
    names = (TASKS[task].arch, TASKS[task].train)
    return searchable({name: Params.model_fields[name].annotation.model_fields for name in names}, SEED_KEYS[task])


def validation_problem(err: ValidationError) -> str:
    """The first problem of ``err`` in words, without pydantic's prefix."""
    return err.errors()[0]["msg"].removeprefix("Value error, ")


def describe_validation_error(path: str | Path, err: ValidationError) -> str:
    """One line: ``file: dotted.key: what is wrong (got value)``, plus how many more problems."""
    problems = err.errors()
    first = problems[0]
    key = ".".join(str(part) for part in first["loc"])
    kind = first["type"]
    if kind == "extra_forbidden":
        message = "unknown key"
    elif kind == "missing":
        message = "missing key"
    else:
        message = validation_problem(err)
        if "input" in first and not isinstance(first["input"], (dict, list)):
            message += f" (got {first['input']!r})"
    more = f" (and {len(problems) - 1} more problem{'s' * (len(problems) > 2)})" if len(problems) > 1 else ""
    return f"{path}: {key + ': ' if key else ''}{message}{more}"
