"""Step 5, ARPA: write backoff-form models (log10 probabilities and backoffs) and read them back."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from seqlab.errors import SeqLabError
from seqlab.io import atomic_path
from seqlab.ngram import parallel, spill
from seqlab.ngram.counts import table_from_words, unigram_table
from seqlab.ngram.estimate import BACKOFF_FORM, NGramModel

LOG10 = math.log(10)
NEVER = -99.0  # log10 probability written for <s>, which is never predicted


def write_arpa(model: NGramModel, tokens: list[str], path: str | Path, rows: int = 1 << 16, threads: int | None = None) -> None:
    """The model as ARPA text, written ``rows`` n-grams at a time: memory stays a few slices', whatever
    the model's size. Numbers are log10 rounded to 9 decimals (probabilities to about 1e-9 relative).
    The lines are put together by Arrow's string kernels, not a Python string per field, in
    ``threads`` threads (default: one per CPU and one more) that work on the next slices while one is
    written; the file is the same whatever the threads and slices."""
    if model.estimator not in BACKOFF_FORM:
        raise SeqLabError(f"estimator {model.estimator!r} has no backoff form; ARPA is written for {', '.join(BACKOFF_FORM)}")
    vocab = pa.array(tokens, type=pa.string())
    threads = threads or parallel.cores() + 1
    with atomic_path(path) as tmp, open(tmp, "wb") as out, ThreadPoolExecutor(threads) as pool:
        out.write(b"\n\\data\\\n")
        for k in range(1, model.order + 1):
            out.write(f"ngram {k}={len(model.tables[k - 1])}\n".encode())
        for k in range(1, model.order + 1):
            out.write(f"\n\\{k}-grams:\n".encode())
            n = len(model.tables[k - 1])
            slices = (np.arange(start, min(start + rows, n)) for start in range(0, n, rows))
            for lines in parallel.in_order(pool, partial(_lines, model, k, vocab), slices, ahead=threads):
                out.write(_text_of(lines))
            spill.forget(*(table.keys for table in model.tables), model.logp[k - 1], model.logbo[k - 1])
        out.write(b"\n\\end\\\n")


def _lines(model: NGramModel, k: int, vocab: pa.Array, at: np.ndarray) -> pa.Array:
    """The ARPA lines (each ending in a newline) of the order-``k`` n-grams of ranks ``at``."""
    logp = model.logp[k - 1][at] / LOG10
    if k == 1:
        logp[at == model.bos] = NEVER
    fields = [_numbers(logp), pc.binary_join_element_wise(*_words(model, k, at, vocab), " ")]
    if k < model.order:
        fields.append(_numbers(model.logbo[k - 1][at] / LOG10))
    return pc.binary_join_element_wise(pc.binary_join_element_wise(*fields, "\t"), "", "\n")


def _numbers(values: np.ndarray) -> pa.Array:
    """Each value rounded to 9 decimals, in its shortest decimal form ('-99', '-0.000123457', '-inf')."""
    return pc.cast(pa.array(np.round(values, 9)), pa.string())


def _words(model: NGramModel, k: int, ranks: np.ndarray, vocab: pa.Array) -> list[pa.Array]:
    """The words of the order-``k`` n-grams of ``ranks``, first to last, read back through the prefix ranks."""
    keys = model.tables[k - 1].keys[ranks]
    words = [vocab.take(keys % model.vocab_size)]
    for j in range(k - 1, 0, -1):
        keys = model.tables[j - 1].keys[keys // model.vocab_size]
        words.append(vocab.take(keys % model.vocab_size))
    return words[::-1]


def _text_of(strings: pa.Array) -> memoryview:
    """The bytes of an Arrow string array's values, end to end, without a copy."""
    offsets = np.frombuffer(strings.buffers()[1], dtype=np.int32)
    return memoryview(strings.buffers()[2])[offsets[strings.offset] : offsets[strings.offset + len(strings)]]


def read_arpa(path: str | Path, vocab_index: dict[str, int], bos: int) -> NGramModel:
    """Load an ARPA file as a backoff-form model over ``vocab_index``; damaged files fail in one line."""
    from seqlab.io import read_lines

    path = Path(path)
    lines = read_lines(path)
    size = len(vocab_index)
    expected: dict[int, int] = {}
    entries: dict[int, list[tuple[list[str], float, float]]] = {}
    section = None
    ended = False
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        if line == "\\data\\":
            section = "data"
        elif line == "\\end\\":
            ended = True
            break
        elif line.startswith("\\") and line.endswith("-grams:"):
            try:
                section = int(line[1 : -len("-grams:")])
            except ValueError:
                raise SeqLabError(f"{path}: line {number}: bad section header {line!r}") from None
            entries[section] = []
        elif section == "data":
            name, _, value = line.partition("=")
            if not name.startswith("ngram ") or not value.strip().isdigit():
                raise SeqLabError(f"{path}: line {number}: expected 'ngram N=COUNT', got {line!r}")
            expected[int(name.split()[1])] = int(value)
        elif isinstance(section, int):
            fields = line.split("\t") if "\t" in line else line.split()
            try:
                logp = float(fields[0])
                words = fields[1].split() if "\t" in line else fields[1 : 1 + section]
                logbo = float(fields[2]) if "\t" in line and len(fields) > 2 else (
                    float(fields[1 + section]) if "\t" not in line and len(fields) > 1 + section else 0.0)
            except (ValueError, IndexError):
                raise SeqLabError(f"{path}: line {number}: malformed {section}-gram entry") from None
            if len(words) != section:
                raise SeqLabError(f"{path}: line {number}: malformed {section}-gram entry: {len(words)} words")
            if not logp <= 0:  # NaN fails this too; -inf (probability 0) is allowed
                raise SeqLabError(f"{path}: line {number}: log10 probability {fields[0]} is not the log of a probability (must be <= 0)")
            if not math.isfinite(logbo):
                raise SeqLabError(f"{path}: line {number}: back-off weight {logbo} is not finite")
            entries[section].append((words, logp, logbo))
        else:
            raise SeqLabError(f"{path}: line {number}: unexpected text before \\data\\")
    if not expected:
        raise SeqLabError(f"{path}: not an ARPA file (no \\data\\ section)")
    order = max(expected)
    if sorted(expected) != list(range(1, order + 1)) or expected[1] == 0:
        listed = ", ".join(f"ngram {k}={n}" for k, n in sorted(expected.items()))
        raise SeqLabError(f"{path}: the header must count the 1-grams (at least one) and every order up to the highest; it lists {listed}")
    unlisted = sorted(set(entries) - set(expected))
    if unlisted:
        raise SeqLabError(f"{path}: a \\{unlisted[0]}-grams: section the header does not count "
                          f"(it lists orders 1 to {order}; add 'ngram {unlisted[0]}=COUNT')")
    for k, n in expected.items():
        found = len(entries.get(k, []))
        if found != n:
            raise SeqLabError(f"{path}: truncated or malformed: header promises {n} {k}-grams, found {found}")
    if not ended:
        raise SeqLabError(f"{path}: truncated: no \\end\\ marker")
    tables = [unigram_table(np.zeros(size, np.int64))]
    logps, logbos = [np.full(size, -np.inf)], [np.zeros(size)]
    for words, p, b in entries[1]:
        w = vocab_index.get(words[0])
        if w is None:
            raise SeqLabError(f"{path}: word {words[0]!r} is not in the vocabulary")
        logps[0][w], logbos[0][w] = p * LOG10, b * LOG10
    logps[0][bos] = -np.inf
    for k in range(2, order + 1):
        try:
            ids = np.array([[vocab_index[w] for w in words] for words, _, _ in entries[k]], dtype=np.int64).reshape(-1, k)
        except KeyError as err:
            raise SeqLabError(f"{path}: word {err.args[0]!r} in the {k}-grams is not in the vocabulary") from None
        table, order_of = table_from_words(ids, np.zeros(len(ids), np.int64), tables, size)
        if (table.prefix < 0).any():
            raise SeqLabError(f"{path}: a {k}-gram's context is missing from the {k - 1}-grams")
        tables.append(table)
        logps.append(np.array([p for _, p, _ in entries[k]])[order_of] * LOG10)
        logbos.append(np.array([b for _, _, b in entries[k]])[order_of] * LOG10)
    return NGramModel("arpa", order, size, bos, tables, logp=logps, logbo=logbos)
