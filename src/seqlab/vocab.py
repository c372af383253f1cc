"""The vocabulary: specials first, then tokens by falling frequency, ties broken by code point order."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Iterable

from seqlab.errors import SeqLabError
from seqlab.io import atomic_path, read_json, read_lines, sha256_text

UNK, BOS, EOS, PAD = "<unk>", "<s>", "</s>", "<pad>"
SPECIALS = (UNK, BOS, EOS)
PAIR_SPECIALS = (PAD, UNK, BOS, EOS)  # the sequence-to-sequence vocabularies pad their batches (ids as in models.seq2seq)


@dataclass(frozen=True)
class Vocab:
    tokens: tuple[str, ...]  # id -> token
    counts: tuple[int, ...]  # train count of each token (0 for the specials)

    @cached_property
    def index(self) -> dict[str, int]:
        return {token: i for i, token in enumerate(self.tokens)}

    @cached_property
    def sha256(self) -> str:
        """Identifies the token-to-id mapping: models record it, loaders compare it."""
        return sha256_text("\n".join(self.tokens))

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: str) -> bool:
        return token in self.index

    def encode(self, tokens: Iterable[str]) -> list[int]:
        index, unk = self.index, self.index[UNK]
        return [index.get(token, unk) for token in tokens]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.tokens[i] for i in ids]

    def oov(self, lines: Iterable[list[str]]) -> tuple[int, int]:
        """(out-of-vocabulary tokens, all tokens) over ``lines``; ``</s>`` is not counted."""
        index = self.index
        total = oov = 0
        for line in lines:
            total += len(line)
            oov += sum(token not in index for token in line)
        return oov, total


def build_vocab(train: Iterable[list[str]], min_freq: int = 1, max_size: int | None = None,
                specials: tuple[str, ...] = SPECIALS) -> Vocab:
    """Count train tokens; keep those seen ``min_freq`` times or more, at most ``max_size`` in all."""
    counts = Counter(token for line in train for token in line)
    for special in specials:
        counts.pop(special, None)
    kept = sorted((item for item in counts.items() if item[1] >= min_freq), key=lambda item: (-item[1], item[0]))
    if max_size is not None:
        kept = kept[: max(0, max_size - len(specials))]
    return Vocab(specials + tuple(t for t, _ in kept), (0,) * len(specials) + tuple(c for _, c in kept))


def save_vocab(vocab: Vocab, directory: str | Path, specials: tuple[str, ...] = SPECIALS, **meta) -> None:
    """``vocab.tsv`` (token, train count; the row is the id) and ``vocab.json`` (size, hash, settings)."""
    import json

    with atomic_path(directory) as tmp:
        tmp.mkdir()
        (tmp / "vocab.tsv").write_text(
            "".join(f"{t}\t{c}\n" for t, c in zip(vocab.tokens, vocab.counts)), encoding="utf-8"
        )
        info = {"size": len(vocab), "sha256": vocab.sha256, "specials": list(specials), **meta}
        (tmp / "vocab.json").write_text(json.dumps(info, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def load_vocab(directory: str | Path, specials: tuple[str, ...] = SPECIALS) -> Vocab:
    directory = Path(directory)
    path = directory / "vocab.tsv"
    tokens, counts = [], []
    for number, line in enumerate(read_lines(path), start=1):
        token, _, count = line.partition("\t")
        if not token or not count.isdigit():
            raise SeqLabError(f"{path}: line {number}: expected 'token<TAB>count'")
        tokens.append(token)
        counts.append(int(count))
    vocab = Vocab(tuple(tokens), tuple(counts))
    if tuple(tokens[: len(specials)]) != specials:
        raise SeqLabError(f"{path}: the first entries must be the specials {' '.join(specials)}")
    expected = read_json(directory / "vocab.json").get("sha256")
    if expected != vocab.sha256:
        raise SeqLabError(f"{path}: hash {vocab.sha256[:12]} does not match vocab.json ({str(expected)[:12]})")
    return vocab
