"""One scoring path for every model: perplexity and cross-entropy on the same tokens.

Counting convention (SRILM/KenLM): every token of a sequence and its ``</s>`` count, ``<s>`` does
not; out-of-vocabulary tokens are scored as ``<unk>`` and their number is reported. A model is
anything with ``log_probs(segments)`` giving the natural-log probability of each position.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from dataclasses import asdict, dataclass
from itertools import repeat
from pathlib import Path
from typing import Iterable, Protocol, Sequence

import numpy as np

from seqlab.errors import SeqLabError
from seqlab.vocab import BOS, EOS, UNK, Vocab


@dataclass
class Segments:
    """Token ids laid end to end in segments (padded sentences), each position with its offset in its segment."""

    ids: np.ndarray  # int64
    offset: np.ndarray  # position within its segment: int32 for fewer than 2**31 positions, else int64

    @classmethod
    def from_sentences(cls, sentences: list[list[int]], bos: int | None, eos: int | None) -> "Segments":
        head, tail = ([bos] if bos is not None else []), ([eos] if eos is not None else [])
        padded = [head + list(s) + tail for s in sentences]
        lengths = np.fromiter((len(p) for p in padded), dtype=np.int64, count=len(padded))
        ids = np.fromiter((t for p in padded for t in p), dtype=np.int64, count=int(lengths.sum()))
        return cls(ids, _offsets(lengths, len(ids)))

    @classmethod
    def from_lengths(cls, tokens: np.ndarray, lengths: np.ndarray, bos: int, eos: int) -> "Segments":
        """Sentences given as their token ids end to end and their lengths, each padded with ``bos``
        and ``eos``."""
        padded = lengths + 2
        ends = np.cumsum(padded)
        starts = ends - padded
        ids = np.empty(int(ends[-1]) if len(ends) else 0, dtype=np.int64)
        inside = np.ones(len(ids), dtype=bool)
        inside[starts] = inside[ends - 1] = False
        ids[inside] = tokens
        ids[starts], ids[ends - 1] = bos, eos
        return cls(ids, _offsets(padded, len(ids)))


def _offsets(lengths: np.ndarray, total: int) -> np.ndarray:
    """Each position's offset within its segment, for segments of ``lengths`` end to end (4 bytes a
    position where they fit: on a corpus of 100M tokens the offsets are 0.4 GB, not 0.8)."""
    width = np.int32 if total < np.iinfo(np.int32).max else np.int64
    starts = np.cumsum(lengths, dtype=width) - lengths.astype(width)
    return np.arange(total, dtype=width) - np.repeat(starts, lengths)


class LanguageModel(Protocol):
    """What every model family is: the one scoring path reads ``log_probs``; prediction and serving
    read ``next_log_probs``."""

    def log_probs(self, segments: Segments) -> np.ndarray:
        """Natural-log probability of the token at every position given what comes before it."""
        ...

    def next_log_probs(self, ids: Sequence[int]) -> np.ndarray:
        """Natural-log probability of every vocabulary id after ``ids`` (a sequence start begins with
        ``<s>``); sums to 1 in probability."""
        ...


@dataclass(frozen=True)
class EvalSet:
    """A split encoded once: the segments, which positions are scored, and how many characters."""

    segments: Segments
    scored: np.ndarray  # bool mask: every position but <s>
    oov: int
    characters: int  # characters of the text, plus one newline per sequence
    fingerprint: str  # sha256 of the scored token ids: equal fingerprints, equal tokens

    @property
    def tokens(self) -> int:
        return int(self.scored.sum())


def eval_set(lines: list[list[str]], vocab: Vocab, characters: int, name: str = "split") -> EvalSet:
    """Tokenized sequences encoded as one split (``characters``: of the text, without newlines)."""
    lengths = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
    index = vocab.index
    codes = np.fromiter((index.get(token, -1) for line in lines for token in line), dtype=np.int64, count=int(lengths.sum()))
    return _encoded([(codes, lengths)], vocab, characters, name)


def read_eval_set(path: str | Path, vocab: Vocab, characters: int, start: int = 0, stop: int | None = None) -> EvalSet:
    """A token file (one sequence per line, tokens separated by single spaces) encoded block by block,
    so no Python object per token outlives its block: what a split larger than memory as text needs.
    ``start`` and ``stop`` read one shard of its lines (``io.line_ranges``). The lines are split and
    looked up in the vocabulary by Arrow's string kernels, not a Python string per token."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from seqlab.io import read_line_blocks

    known = pa.array(vocab.tokens, type=pa.string())

    def blocks():
        for lines in read_line_blocks(path, start=start, stop=stop):
            pieces = pc.split_pattern(pa.array(lines, type=pa.large_string()), " ")
            lengths = pc.list_value_length(pieces).to_numpy().astype(np.int64)
            codes = pc.fill_null(pc.index_in(pieces.flatten(), value_set=known), -1).to_numpy().astype(np.int64)
            empty = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines)) == 0
            if empty.any():  # an empty line splits into one empty piece, not a token
                codes = np.delete(codes, pieces.offsets.to_numpy()[:-1][empty])
                lengths[empty] = 0
            yield codes, lengths

    return _encoded(blocks(), vocab, characters, str(path))


def _encoded(blocks: Iterable[tuple[np.ndarray, np.ndarray]], vocab: Vocab, characters: int, name: str) -> EvalSet:
    """Blocks of (token ids end to end, -1 where a token is not in ``vocab``; tokens per sequence) as one split."""
    bos, eos, unk = vocab.index[BOS], vocab.index[EOS], vocab.index[UNK]
    ids, lengths, oov = [], [], 0
    for codes, counts in blocks:
        unknown = codes < 0
        oov += int(unknown.sum())
        codes[unknown] = unk
        ids.append(codes)
        lengths.append(counts)
    sequences = sum(map(len, lengths))
    if not sequences:
        raise SeqLabError(f"{name}: no sequences to score")
    segments = Segments.from_lengths(np.concatenate(ids), np.concatenate(lengths), bos, eos)
    scored = segments.ids != bos
    digest = hashlib.sha256(segments.ids[scored].astype("<i8").tobytes()).hexdigest()
    return EvalSet(segments, scored, oov, characters + sequences, digest)


@dataclass(frozen=True)
class Scores:
    tokens: int
    oov_tokens: int
    zero_prob_tokens: int
    nll_nats: float  # total negative log-likelihood
    characters: int
    fingerprint: str

    @property
    def xent_nats(self) -> float:
        return self.nll_nats / self.tokens

    @property
    def xent_bits(self) -> float:
        return self.xent_nats / math.log(2)

    @property
    def ppl(self) -> float:
        return math.exp(self.xent_nats) if math.isfinite(self.xent_nats) else math.inf

    @property
    def bits_per_char(self) -> float:
        return self.nll_nats / math.log(2) / self.characters

    def metrics(self, split: str) -> dict[str, float]:
        """The names every model family logs, so MLflow's compare view lines them up."""
        return {
            f"{split}_ppl": self.ppl,
            f"{split}_xent_nats": self.xent_nats,
            f"{split}_xent_bits": self.xent_bits,
            f"{split}_bits_per_char": self.bits_per_char,
            f"{split}_tokens": self.tokens,
        }

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "ppl": self.ppl,
            "xent_nats": self.xent_nats,
            "xent_bits": self.xent_bits,
            "bits_per_char": self.bits_per_char,
        }


def score(model: LanguageModel, data: EvalSet, name: str = "model") -> Scores:
    """Score ``model`` on ``data``; zero-probability tokens make the perplexity ``inf`` (with a warning)."""
    log_probs = model.log_probs(data.segments)[data.scored]
    zero = int(np.isneginf(log_probs).sum())
    if zero:
        warnings.warn(f"{name}: {zero} of {len(log_probs)} tokens have zero probability; perplexity is inf", stacklevel=2)
    return Scores(len(log_probs), data.oov, zero, float(-log_probs.sum()), data.characters, data.fingerprint)


def load_eval_set(tokens_dir, split: str, vocab: Vocab) -> EvalSet:
    """The ``split`` token stream of the tokenize stage, with its character count from the stats table."""
    import pandas as pd

    characters = int(pd.read_parquet(f"{tokens_dir}/{split}.stats.parquet")["n_chars"].sum())
    return read_eval_set(f"{tokens_dir}/{split}.txt", vocab, characters)


@dataclass(frozen=True)
class Summary:
    """What a model stage records of its model, as ``scores.json`` in the model's folder: the
    schema the leaderboard, the hybrid and the registry read. ``details`` are the family's own
    (an n-gram's estimator parameters, a neural model's config and history, a hybrid's weights)."""

    model: str  # the leaderboard's name: ngram-mkn-5, lstm-dot, transformer, hybrid, ...
    family: str  # ngram | neural | hybrid
    estimator: str
    order: int | None
    registered_model: str
    details: dict
    vocab_sha256: str
    valid: Scores
    test: Scores
    history: list[dict] | None = None  # a trained model's rounds: round, tokens, train_loss, valid_loss, valid_ppl, lr

    def as_dict(self) -> dict:
        history = {} if self.history is None else {"history": self.history}
        return {"model": self.model, "family": self.family, "estimator": self.estimator, "order": self.order,
                "registered_model": self.registered_model, **self.details, "vocab_sha256": self.vocab_sha256,
                **history, "valid": self.valid.as_dict(), "test": self.test.as_dict()}

    def metrics(self) -> dict[str, float]:
        return {**self.valid.metrics("valid"), **self.test.metrics("test")}


SUMMARY_KEYS = ("model", "family", "estimator", "order", "registered_model", "vocab_sha256", "valid", "test")
INFINITE_WITH_ZEROS = ("ppl", "xent_nats", "xent_bits", "bits_per_char")  # written null in scores.json
SCORE_KEYS = ("tokens", "oov_tokens", "zero_prob_tokens", "fingerprint", "ppl", "xent_nats", "xent_bits", "bits_per_char")


def read_summary(folder) -> dict:
    """A model folder's ``scores.json``, checked to hold what every reader needs; one line naming the
    file otherwise."""
    from pathlib import Path

    from seqlab.io import read_json

    path = Path(folder) / "scores.json"
    summary = read_json(path)
    missing = [key for key in SUMMARY_KEYS if not isinstance(summary, dict) or key not in summary]
    missing += [f"{split}.{key}" for split in ("valid", "test") if isinstance(summary, dict) and isinstance(summary.get(split), dict)
                for key in SCORE_KEYS if key not in summary[split]]
    if missing:
        raise SeqLabError(f"{path}: not a model summary: {', '.join(missing)} missing; rerun the stage that wrote it")
    for split in ("valid", "test"):  # JSON has no infinity: null, with zero_prob_tokens > 0 saying why
        scores = summary[split]
        if scores["zero_prob_tokens"]:
            scores.update({key: math.inf for key in INFINITE_WITH_ZEROS if scores[key] is None})
    return summary


def best_on_valid(folders) -> tuple:
    """(folder, summary) of the model folder with the lowest valid perplexity (the first folder by
    name on a tie)."""
    summaries = {folder: read_summary(folder) for folder in folders}
    folder = min(summaries, key=lambda f: (summaries[f]["valid"]["ppl"], str(f)))
    return folder, summaries[folder]
