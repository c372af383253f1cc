"""Atomic writes, careful reads and hashing: the one place that touches output files."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from seqlab.errors import SeqLabError


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; rename it onto ``target`` only if the block succeeds.

    Works for files and directories. On failure the temporary path is removed and ``target`` is left
    as it was, so a stage never leaves a half-written output behind.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    staged = tmp / target.name
    try:
        yield staged
        if not staged.exists():
            raise RuntimeError(f"{target}: nothing was written")
        remove(target)
        os.replace(staged, target)
    except OSError as err:
        if err.filename is None:  # a write() on a full disk does not say where: the output it was for
            raise OSError(err.errno, err.strerror, str(target)) from err
        raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def create_once(path: str | os.PathLike) -> bool:
    """Create the empty file ``path`` unless it exists; True for the one caller, of any process, that created it."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
    except FileExistsError:
        return False
    return True


def remove(path: str | os.PathLike) -> None:
    """Remove a file or a directory tree, if there is one."""
    path = Path(path)
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | os.PathLike, obj) -> None:
    """``obj`` as standard JSON: a float that is not finite (a perplexity of a model that gives some
    token zero probability) is written as ``null``, which every parser reads, never as ``Infinity``."""
    write_text(path, json.dumps(_finite(obj), indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n")


def _finite(obj):
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def read_json(path: str | os.PathLike):
    text = read_text(path)
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise SeqLabError(f"{path}: not valid JSON ({err.msg} at line {err.lineno})") from None


def read_text(path: str | os.PathLike) -> str:
    """Read a UTF-8 text file, without a byte-order mark; missing, binary and non-UTF-8 files are
    refused with one clear line."""
    path = Path(path)
    if not path.exists():
        raise SeqLabError(f"{path}: file not found")
    if not path.is_file():
        raise SeqLabError(f"{path}: not a regular file")
    data = path.read_bytes()
    nul = data.find(b"\x00")
    if nul >= 0:
        raise SeqLabError(f"{path}: binary file (NUL byte at offset {nul}), expected UTF-8 text")
    try:
        return data.decode("utf-8").removeprefix("\ufeff")  # a byte-order mark is not text (nor a token)
    except UnicodeDecodeError as err:
        raise SeqLabError(f"{path}: not UTF-8 text (invalid byte at offset {err.start})") from None


def read_lines(path: str | os.PathLike) -> list[str]:
    """The lines of a UTF-8 text file, without line endings.

    Only \n and \r\n end a line: other separators (\x1c, \u2028, ...) stay inside the line, where
    validation can see them.
    """
    lines = read_text(path).split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def read_line_blocks(path: str | os.PathLike, block_bytes: int = 1 << 23, start: int = 0,
                     stop: int | None = None) -> Iterator[list[str]]:
    """The lines of a UTF-8 text file as ``read_lines`` gives them, in blocks of about ``block_bytes``,
    so a file larger than memory can be read; refused as ``read_text`` refuses it, the offset counted
    from the file's start. ``start`` and ``stop`` (byte offsets at line starts, as ``line_ranges``
    gives them) read a range of the file's lines only."""
    path = Path(path)
    if not path.exists():
        raise SeqLabError(f"{path}: file not found")
    if not path.is_file():
        raise SeqLabError(f"{path}: not a regular file")
    with open(path, "rb") as handle:
        handle.seek(start)
        left = None if stop is None else stop - start
        carry = b""  # start: the file offset of carry's first byte
        while True:
            block = handle.read(block_bytes if left is None else min(block_bytes, left))
            if left is not None:
                left -= len(block)
            data = carry + block
            if not data:
                return
            end = data.rfind(b"\n") + 1 if block else len(data)  # whole lines only, until the last block
            if end == 0:  # a line longer than a block: read on
                carry = data
                continue
            text, carry = data[:end], data[end:]
            nul = text.find(b"\x00")
            if nul >= 0:
                raise SeqLabError(f"{path}: binary file (NUL byte at offset {start + nul}), expected UTF-8 text")
            try:
                decoded = text.decode("utf-8")
            except UnicodeDecodeError as err:
                raise SeqLabError(f"{path}: not UTF-8 text (invalid byte at offset {start + err.start})") from None
            if start == 0:
                decoded = decoded.removeprefix("\ufeff")
            lines = decoded.split("\n")
            if lines[-1] == "":
                lines.pop()
            yield [line[:-1] if line.endswith("\r") else line for line in lines]
            start += end
            if not block:
                return


def line_ranges(path: str | os.PathLike, part_bytes: int) -> list[tuple[int, int]]:
    """Byte ranges ``[start, stop)`` of whole lines covering the file, each about ``part_bytes`` long
    (a range ends at the first line end at or after its share), for reading the file in shards."""
    size = Path(path).stat().st_size
    ranges, start = [], 0
    with open(path, "rb") as handle:
        while start < size:
            handle.seek(min(start + max(part_bytes, 1), size) - 1)
            while True:  # on to the end of the line the share ends in
                chunk = handle.read(1 << 16)
                newline = chunk.find(b"\n")
                if newline >= 0 or not chunk:
                    stop = handle.tell() - len(chunk) + newline + 1 if newline >= 0 else size
                    break
            ranges.append((start, stop))
            start = stop
    return ranges


def md5_file(path: str | os.PathLike) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_md5(path: str | os.PathLike) -> str:
    """The hash DVC 3 records for ``path`` in dvc.lock: md5 of a file, or ``<md5>.dir`` of a directory
    (md5 of the sorted JSON list of its files' md5 and relative paths)."""
    path = Path(path)
    if path.is_file():
        return md5_file(path)
    entries = sorted(
        ({"md5": md5_file(f), "relpath": f.relative_to(path).as_posix()} for f in path.rglob("*") if f.is_file()),
        key=lambda entry: entry["relpath"],
    )
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + ".dir"


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
