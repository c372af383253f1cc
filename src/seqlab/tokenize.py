"""Word, char and BPE tokenizers behind one small interface.

A token never contains whitespace, so a token stream is stored as one line per sequence with tokens
separated by single spaces. The char tokenizer writes a space as ``▁`` (U+2581) for that reason, and a
``▁`` that was in the text as the token ``<U+2581>``, so every line comes back as it was.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Protocol

from seqlab.errors import SeqLabError

SPACE = "\u2581"
LITERAL_SPACE = "<U+2581>"  # a ▁ in the text itself; char tokens are otherwise one character
DEFAULT_WORD_PATTERN = r"\w+(?:['’-]\w+)*|[^\w\s]"
KINDS = ("word", "char", "bpe")


class Tokenizer(Protocol):
    kind: str

    def tokenize(self, line: str) -> list[str]: ...

    def detokenize(self, tokens: list[str]) -> str: ...

    def to_dict(self) -> dict: ...


@dataclass
class WordTokenizer:
    """Tokens are the matches of ``pattern``, left to right; ``\\S+`` splits categorical states."""

    pattern: str = DEFAULT_WORD_PATTERN
    lowercase: bool = False
    kind: str = field(default="word", init=False)

    def __post_init__(self) -> None:
        self._regex = re.compile(self.pattern)

    def tokenize(self, line: str) -> list[str]:
        text = line.lower() if self.lowercase else line
        if self._regex.groups:  # a pattern with groups: the token is still the whole match, not the groups
            return [match.group(0) for match in self._regex.finditer(text)]
        return self._regex.findall(text)

    def detokenize(self, tokens: list[str]) -> str:
        return " ".join(tokens)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "pattern": self.pattern, "lowercase": self.lowercase}


@dataclass
class CharTokenizer:
    lowercase: bool = False
    kind: str = field(default="char", init=False)

    def tokenize(self, line: str) -> list[str]:
        escape = {" ": SPACE, SPACE: LITERAL_SPACE}
        return [escape.get(char, char) for char in (line.lower() if self.lowercase else line)]

    def detokenize(self, tokens: list[str]) -> str:
        unescape = {SPACE: " ", LITERAL_SPACE: SPACE}
        return "".join(unescape.get(token, token) for token in tokens)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "lowercase": self.lowercase}


class BPETokenizer:
    """Byte-level BPE (Hugging Face ``tokenizers``); a leading ``Ġ`` in a token marks a space."""

    kind = "bpe"

    def __init__(self, model, lowercase: bool = False):
        self.model = model
        self.lowercase = lowercase

    @classmethod
    def train(cls, lines: Iterable[str], vocab_size: int, lowercase: bool = False) -> "BPETokenizer":
        from tokenizers import Tokenizer as HFTokenizer
        from tokenizers import decoders, models, pre_tokenizers, trainers

        model = HFTokenizer(models.BPE())
        model.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        model.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        lines = list(lines)
        model.train_from_iterator([line.lower() for line in lines] if lowercase else lines, trainer=trainer)
        return cls(model, lowercase)

    def tokenize(self, line: str) -> list[str]:
        return self.model.encode(line.lower() if self.lowercase else line).tokens

    def tokenize_batch(self, lines: list[str]) -> list[list[str]]:
        lines = [line.lower() for line in lines] if self.lowercase else lines
        return [encoding.tokens for encoding in self.model.encode_batch(lines)]

    def detokenize(self, tokens: list[str]) -> str:
        return self.model.decoder.decode(tokens)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "lowercase": self.lowercase, "model": json.loads(self.model.to_str())}


def fit_tokenizer(kind: str, train_lines: list[str], *, lowercase: bool, pattern: str, bpe_vocab_size: int) -> Tokenizer:
    """Make the tokenizer of ``kind``; only BPE learns anything, and only from the train lines."""
    if kind == "word":
        return WordTokenizer(pattern, lowercase)
    if kind == "char":
        return CharTokenizer(lowercase)
    if kind == "bpe":
        return BPETokenizer.train(train_lines, bpe_vocab_size, lowercase)
    raise SeqLabError(f"unknown tokenizer {kind!r}; expected one of {', '.join(KINDS)}")


def tokenize_lines(tokenizer: Tokenizer, lines: list[str]) -> list[list[str]]:
    if isinstance(tokenizer, BPETokenizer):
        return tokenizer.tokenize_batch(lines)
    return [tokenizer.tokenize(line) for line in lines]


def tokenizer_from_dict(spec: dict) -> Tokenizer:
    kind = spec.get("kind")
    if kind == "word":
        return WordTokenizer(spec["pattern"], spec["lowercase"])
    if kind == "char":
        return CharTokenizer(spec["lowercase"])
    if kind == "bpe":
        from tokenizers import Tokenizer as HFTokenizer

        return BPETokenizer(HFTokenizer.from_str(json.dumps(spec["model"])), spec["lowercase"])
    raise SeqLabError(f"unknown tokenizer {kind!r}; expected one of {', '.join(KINDS)}")


def save_tokenizer(tokenizer: Tokenizer, path: str | Path) -> None:
    from seqlab.io import write_json

    write_json(path, tokenizer.to_dict())


def load_tokenizer(path: str | Path) -> Tokenizer:
    from seqlab.io import read_json

    spec = read_json(path)
    try:
        return tokenizer_from_dict(spec)
    except Exception as err:
        if isinstance(err, SeqLabError):
            raise SeqLabError(f"{path}: {err}") from None
        raise SeqLabError(f"{path}: not a SeqLab tokenizer file ({type(err).__name__}: {err})") from None


# --- token streams and their per-line stats ---------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def line_stats(lines: list[str], tokens: list[list[str]]):
    """A pandas table, one row per line: tokens, characters and control characters."""
    import pandas as pd

    return pd.DataFrame(
        {
            "line": range(len(lines)),
            "n_tokens": [len(t) for t in tokens],
            "n_chars": [len(line) for line in lines],
            "n_control": [len(_CONTROL.findall(line)) for line in lines],
        }
    ).astype("int64")


def format_stream(tokens: list[list[str]]) -> str:
    """One line per sequence, tokens separated by single spaces; refuses tokens that would not survive."""
    out = []
    for number, line in enumerate(tokens, start=1):
        joined = " ".join(line)
        if "" in line or (line and len(joined.split(" ")) != len(line)) or "\n" in joined:
            raise SeqLabError(f"line {number}: the tokenizer produced an empty token or one holding whitespace")
        out.append(joined + "\n")
    return "".join(out)


def read_stream(path: str | Path) -> list[list[str]]:
    from seqlab.io import read_lines

    return [line.split(" ") if line else [] for line in read_lines(path)]
