"""Arrays spilled to disk and read back memory-mapped, so that an n-gram model larger than its budget
is held by the page cache rather than by the process (like lmplz's ``-T``).

``put`` writes an array to a file in a folder, maps it read-only and unlinks it at once: the data
lives as long as some array maps it, and nothing is left on disk when the model goes, however the
process ends. A pass that has read a spilled array calls ``forget`` on it: its pages leave the
process's resident set (they stay in the page cache, from where a later read takes them back), so
that what a build holds resident is one order's arrays at a time, not the model.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from pathlib import Path

import numpy as np

from seqlab.errors import SeqLabError


class _Map(mmap.mmap):
    """A read-only mapping that remembers the folder its file was written to."""

    folder: Path


def put(array: np.ndarray, folder: str | Path | None = None) -> np.ndarray:
    """``array`` written to an unlinked file in ``folder`` (default: the system's temporary folder) and
    mapped back read-only; an empty array stays as it is."""
    array = np.ascontiguousarray(array)
    if not array.size:
        return array
    folder = Path(folder or tempfile.gettempdir())
    try:
        handle, name = tempfile.mkstemp(prefix="seqlab-ngram-", suffix=".bin", dir=folder)
        try:
            with os.fdopen(handle, "wb") as out:
                array.tofile(out)
            with open(name, "rb") as source:
                mapping = _Map(source.fileno(), 0, access=mmap.ACCESS_READ)
        finally:
            os.unlink(name)
    except OSError as err:
        raise SeqLabError(f"{folder}: cannot spill n-gram tables there ({err.strerror or err}); free space or set TMPDIR") from None
    mapping.folder = folder
    return np.frombuffer(mapping, dtype=array.dtype).reshape(array.shape)


def _mapping(array) -> _Map | None:
    base = array
    while base is not None:
        if isinstance(base, memoryview):
            base = base.obj
        if isinstance(base, _Map):
            return base
        base = getattr(base, "base", None)
    return None


def folder_of(array: np.ndarray) -> Path | None:
    """The folder a spilled array was written to; None for an array in memory."""
    mapping = _mapping(array)
    return None if mapping is None else mapping.folder


def to(folder: str | Path | None = None, when: bool = True):
    """A function that spills an array to ``folder`` (default: the system's temporary folder) when
    ``when``, or leaves it in memory."""
    return (lambda array: put(array, folder)) if when else (lambda array: array)


def like(reference: np.ndarray):
    """A function that spills an array to where ``reference`` was spilled, or leaves it in memory as
    ``reference`` is: what is derived from spilled tables is spilled in turn."""
    folder = folder_of(reference)
    return to(folder, when=folder is not None)


def forget(*arrays) -> None:
    """Drop the resident pages of the spilled ones among ``arrays`` (others are left alone)."""
    for array in arrays:
        mapping = _mapping(array) if array is not None else None
        if mapping is not None and not mapping.closed and hasattr(mapping, "madvise"):
            mapping.madvise(mmap.MADV_DONTNEED)
