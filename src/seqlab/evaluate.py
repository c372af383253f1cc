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
from typing import Protocol

import numpy as np

from seqlab.errors import SeqLabError
from seqlab.ngram.counts import Segments
from seqlab.vocab import BOS, EOS, Vocab


class LanguageModel(Protocol):
    def log_probs(self, segments: Segments) -> np.ndarray: ...


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
    if not lines:
        raise SeqLabError(f"{name}: no sequences to score")
    bos, eos = vocab.index[BOS], vocab.index[EOS]
    oov, _ = vocab.oov(lines)
    segments = Segments.from_sentences([vocab.encode(line) for line in lines], bos, eos)
    scored = segments.ids != bos
    digest = hashlib.sha256(segments.ids[scored].astype("<i8").tobytes()).hexdigest()
    return EvalSet(segments, scored, oov, characters + len(lines), digest)


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

    from seqlab.tokenize import read_stream

    characters = int(pd.read_parquet(f"{tokens_dir}/{split}.stats.parquet")["n_chars"].sum())
    return eval_set(read_stream(f"{tokens_dir}/{split}.txt"), vocab, characters, f"{tokens_dir}/{split}.txt")


MODEL_FILES = ("hybrid.json", "model.pt", "model.npz", "model.arpa")


def open_model(path, vocab: Vocab, batch_size: int = 16, window: int = 128, files=None, device: str = "cpu") -> LanguageModel:
    """Any SeqLab model, ready to score: an n-gram ``model.npz`` or ARPA file, a neural ``model.pt``, a
    hybrid's ``hybrid.json`` (its parts found under ``files`` when given), or a directory holding one.
    Files are checked against ``vocab``; checkpoints load with ``weights_only=True``."""
    from pathlib import Path

    path = Path(path)
    if path.is_dir():
        inside = [path / name for name in MODEL_FILES if (path / name).is_file()]
        if not inside:
            raise SeqLabError(f"{path}: no model file here (looked for {', '.join(MODEL_FILES)})")
        path = inside[0]
    if path.suffix == ".json":
        from seqlab.hybrid import Interpolated, load_spec

        parts = load_spec(path, files)
        return Interpolated([open_model(f, vocab, batch_size, window, device=device) for f, _ in parts], [w for _, w in parts])
    if path.suffix == ".pt":
        from seqlab.models.checkpoint import load_checkpoint
        from seqlab.models.scoring import NeuralLM

        return NeuralLM(load_checkpoint(path, vocab.sha256, device), batch_size, window)
    if path.suffix == ".npz":
        from seqlab.ngram.model_file import load_model

        return load_model(path, vocab.sha256)
    from seqlab.ngram.arpa import read_arpa

    return read_arpa(path, vocab.index, vocab.index[BOS])
