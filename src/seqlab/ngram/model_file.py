"""Save and load n-gram models as ``model.npz``: the count tables and the estimator's settings.

Only counts (with a pruned model's continuation counts) and tuned settings are stored; probabilities
are re-derived on load, which is exact and takes well under a second. Loading never unpickles anything (``allow_pickle=False``).
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np

from seqlab.errors import SeqLabError
from seqlab.io import atomic_path
from seqlab.ngram import spill
from seqlab.ngram.counts import table_from_words, unigram_table
from seqlab.ngram.estimate import NGramModel, estimate

FORMAT = "seqlab-ngram-1"


def save_model(model: NGramModel, path: str | Path, vocab_sha256: str) -> None:
    meta = {
        "format": FORMAT,
        "estimator": model.estimator,
        "order": model.order,
        "vocab_size": model.vocab_size,
        "bos": model.bos,
        "params": model.params,
        "vocab_sha256": vocab_sha256,
    }
    arrays = {"meta": np.array(json.dumps(meta))}
    for table in model.tables[1:]:
        arrays[f"keys_{table.order}"] = table.keys
        arrays[f"counts_{table.order}"] = table.counts
    arrays["counts_1"] = model.tables[0].counts
    for table in model.tables:  # a pruned model's continuation counts over every counted n-gram
        if table.extended is not None:
            arrays[f"extended_{table.order}"] = table.extended
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)  # sorted keys pack well: 40 MB -> 7 MB at order 5
    spill.forget(*arrays.values())


def load_model(path: str | Path, vocab_sha256: str | None = None) -> NGramModel:
    """Load a model; refuse one built on another vocabulary or a damaged file, in one line."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            arrays = {name: data[name] for name in data.files if name != "meta"}
    except FileNotFoundError:
        raise SeqLabError(f"{path}: model file not found") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError, json.JSONDecodeError) as err:
        raise SeqLabError(f"{path}: not a readable SeqLab n-gram model ({type(err).__name__})") from None
    if meta.get("format") != FORMAT:
        raise SeqLabError(f"{path}: unknown model format {meta.get('format')!r}")
    if vocab_sha256 is not None and meta["vocab_sha256"] != vocab_sha256:
        raise SeqLabError(
            f"{path}: built for vocabulary {meta['vocab_sha256'][:12]}, not the current one {vocab_sha256[:12]}"
        )
    size = meta["vocab_size"]
    tables = [unigram_table(arrays["counts_1"])]
    words = tables[0].word[:, None]
    for k in range(2, meta["order"] + 1):
        keys = arrays[f"keys_{k}"]
        words = np.hstack([words[keys // size], (keys % size)[:, None]])
        tables.append(table_from_words(words, arrays[f"counts_{k}"], tables, size)[0])  # keys saved sorted: rows in place
    for table in tables:
        table.extended = arrays.get(f"extended_{table.order}")
    params = meta["params"]
    return estimate(meta["estimator"], tables, size, meta["bos"], k=params.get("k"), lambdas=params.get("lambdas"))
