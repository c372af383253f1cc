"""The n-gram build on Ray (``ngram.engine: ray``): counting and Kneser-Ney estimation as Ray task
stages over shards of the train token file, for corpora that one machine cannot count.

KenLM's passes, each partitioned by the key it needs. An order-k n-gram (k >= 2) lives in the
partition of a hash of its last two words, its *home*; order 1, the vocabulary, is summed on the driver.

1. count: one task per shard (a byte range of whole lines) counts every order with ``counts.count``
   and sends each n-gram to its home.
2. merge: one task per partition sums the counts and applies the cut-offs. An n-gram and its suffix
   (without its first word) share a home, so the continuation counts of the orders below are counted
   where they live.
3. adjust: adjusted counts and their counts of counts per partition; the driver sums the counts of
   counts into the discounts, and computes the unigram distribution.
4. interpolate, order by order: each n-gram, with its discount and the probability of its suffix
   (found at home), goes to its context's home; there the context's totals give the back-off weight
   (kept with the context, an n-gram of the order below living there) and the n-gram's probability,
   which goes back home for the order above.
5. write: one Parquet file per order and partition (``order=K/part-NNNNN.parquet``: the words' ids
   ``w0..w{K-1}``, ``count``, ``logp``, ``logbo``, natural logs), written whole or not at all.

The driver then reads the files into an ``NGramModel`` equal to the single-process build (to about
1e-15: only the order of additions differs). Counts of counts, discounts and order 1 pass through the
driver; nothing of the size of the corpus does.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from seqlab.errors import SeqLabError
from seqlab.io import atomic_path, create_once, line_ranges
from seqlab.ngram import discount, spill
from seqlab.ngram.adjust import adjusted
from seqlab.ngram.counts import BYTES_PER_POSITION, MODEL_BYTES_PER_NGRAM, Table, count, spilled, table_from_words, unigram_table
from seqlab.ngram.discount import counts_of_counts
from seqlab.ngram.estimate import NGramModel, kneser_ney_unigrams
from seqlab.scoring import read_eval_set
from seqlab.tune.cluster import error_line

FAULT_ENV = "SEQLAB_FAULT_NGRAM_TASK_EXIT"  # a marker path: the first merge task to create it dies (fault tests)
TEXT_BYTES_PER_POSITION = 6  # a token and its space, about: a shard's text for the positions the budget counts at once
MERGE_BYTES_PER_NGRAM = 48  # what merging holds per n-gram: its shards' rows, its key, its index among the unique
RETRIES = 3  # a task whose worker dies is run again this often (Ray's lineage keeps its inputs)


def _home(words: np.ndarray, parts: int) -> np.ndarray:
    """The partition of each row of ``words`` (n-grams, one per row): a hash of its last two words
    (of its one word for a unigram)."""
    h = words[:, -1].astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    if words.shape[1] > 1:
        h ^= words[:, -2].astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(29)
    return (h % np.uint64(parts)).astype(np.int64)


def _routes(home: np.ndarray, parts: int) -> tuple[np.ndarray, np.ndarray]:
    """The rows in partition order (stable) and where each partition's rows begin and end."""
    order = np.argsort(home, kind="stable")
    return order, np.searchsorted(home[order], np.arange(parts + 1))


@dataclass
class Partition:
    """One partition's n-grams of orders 2..N. An order-k n-gram's key is ``w0 * V + w1`` at order 2 and
    ``s * V + w0`` above, ``s`` the index of its suffix in this partition's order k-1 (its home too), so
    a suffix is found by its index and an n-gram's words by following the suffixes down."""

    vocab_size: int
    keys: dict[int, np.ndarray]  # order -> int64 sorted unique keys (KenLM's suffix order)
    counts: dict[int, np.ndarray]  # order -> int64 raw counts
    extended: dict[int, np.ndarray] = field(default_factory=dict)  # pruned: continuation counts over every counted n-gram
    indexes: dict = field(default_factory=dict, repr=False)  # order -> hash index of its keys, built once per task

    def __getstate__(self) -> dict:
        return {**self.__dict__, "indexes": {}}  # the hash indexes are rebuilt where needed, not shipped

    def suffix(self, k: int) -> np.ndarray:
        """Index of each order-k n-gram's suffix in order k-1 (order 2: the last word's id)."""
        return self.keys[k] % self.vocab_size if k == 2 else self.keys[k] // self.vocab_size

    def first(self, k: int) -> np.ndarray:
        return self.keys[k] // self.vocab_size if k == 2 else self.keys[k] % self.vocab_size

    def words(self, k: int) -> np.ndarray:
        """The order-k n-grams as rows of word ids."""
        out = np.empty((len(self.keys[k]), k), dtype=np.int32)
        out[:, 0] = self.first(k)
        out[:, 1:] = self.suffix(k)[:, None] if k == 2 else self.words(k - 1)[self.suffix(k)]
        return out

    def find(self, words: np.ndarray) -> np.ndarray:
        """Index of each row of ``words`` (n-grams of one order >= 2 living here) in its order: one
        hash lookup per word (pandas' index), not a binary search of cache misses."""
        size, k = self.vocab_size, words.shape[1]
        index = self.index(2).get_indexer(words[:, -2].astype(np.int64) * size + words[:, -1])
        for j in range(3, k + 1):
            index = self.index(j).get_indexer(index * size + words[:, -j])
        return index

    def index(self, k: int) -> pd.Index:
        if k not in self.indexes:
            self.indexes[k] = pd.Index(self.keys[k], copy=False)
        return self.indexes[k]


def _count_shard(path: str, start: int, stop: int, vocab, order: int, memory: int, parts: int) -> list:
    """Count one shard: its unigram counts, then for each partition the shard's n-grams of orders
    2..``order`` living there, per order ``(first word, rest, counts)``: ``rest`` is the last word at
    order 2 and, above, the position of the n-gram's suffix in this shard's order k-1 for the same
    partition (the suffix lives there too), so merging needs no lookup of words."""
    segments = read_eval_set(path, vocab, 0, start, stop).segments
    tables = count(segments, order, len(vocab), memory, threads=1)  # a task holds one CPU
    del segments
    words = tables[0].word[:, None].astype(np.int32)
    per_part: list[list] = [[] for _ in range(parts)]
    position = None  # of each n-gram of the order below in its partition's piece
    for table in tables[1:]:
        words = np.hstack([words[table.prefix], table.word.astype(np.int32)[:, None]])
        rows, bounds = _routes(_home(words, parts), parts)
        rest = words[:, 1] if table.order == 2 else position[table.suffix]
        first, counts = words[:, 0], table.counts.astype(np.int64)
        position = np.empty(len(rows), dtype=np.int64)
        for p in range(parts):
            at = rows[bounds[p] : bounds[p + 1]]
            position[at] = np.arange(len(at))
            per_part[p].append((first[at], rest[at], counts[at]))
    return [tables[0].counts.astype(np.int64), *per_part]


def _factorize(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(index of each key among the unique keys, the unique keys sorted): a hash pass (pandas), then
    the few unique keys sorted, so that following suffixes down later reads memory in order."""
    codes, unique = pd.factorize(keys)
    order = np.argsort(unique)
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    return rank[codes], unique[order]


def _merge(order: int, vocab_size: int, cutoffs: list[int], marker: str | None, *pieces: list) -> Partition:
    """One partition's n-grams of every order, counts summed over the shards, cut-offs applied."""
    if marker and create_once(marker):
        os._exit(1)  # a worker lost mid-pass: Ray runs the task again
    part = Partition(vocab_size, {}, {})
    merged_at = None  # the merged index of each shard's n-grams of the order below, shard after shard
    for k in range(2, order + 1):
        first = np.concatenate([piece[k - 2][0] for piece in pieces]).astype(np.int64)
        rest = np.concatenate([piece[k - 2][1] for piece in pieces])
        counts = np.concatenate([piece[k - 2][2] for piece in pieces])
        if k == 2:
            keys = first * vocab_size + rest
        else:  # the suffix's merged index: its shard's position of it, offset to that shard's rows
            offsets = np.repeat(np.cumsum([0] + [len(piece[k - 3][0]) for piece in pieces[:-1]]),
                                [len(piece[k - 2][0]) for piece in pieces])
            keys = merged_at[offsets + rest] * vocab_size + first
        del first, rest
        merged_at, keys = _factorize(keys)
        part.keys[k], part.counts[k] = keys, np.bincount(merged_at, weights=counts, minlength=len(keys)).astype(np.int64)
    if not any(cutoffs):
        return part
    # continuation counts before pruning, as KenLM (order 1: this partition's share, by word id)
    part.extended = {k: np.bincount(part.suffix(k + 1), minlength=len(part.keys[k]) if k > 1 else vocab_size)
                     for k in range(1, order)}
    kept = None  # cut-offs, bottom up: a kept n-gram's suffix is kept (its count is no smaller, its cut-off no larger)
    for k in range(2, order + 1):
        keys, counts = part.keys[k], part.counts[k]
        keep = counts > cutoffs[min(k, len(cutoffs)) - 1]
        if kept is not None:  # the suffixes' new indices
            keep &= kept[keys // vocab_size] >= 0
            keys = kept[keys // vocab_size] * vocab_size + keys % vocab_size
        part.keys[k], part.counts[k] = keys[keep], counts[keep]
        if k in part.extended:
            part.extended[k] = part.extended[k][keep]
        kept = np.cumsum(keep) - 1
        kept[~keep] = -1
    return part


def _adjust(part: Partition, order: int, bos: int) -> tuple:
    """Adjusted counts of orders 2..``order`` (raw at the top, continuation counts below but for
    n-grams starting with ``<s>``), their counts of counts, and this partition's share of the unigrams'
    continuation counts (how many distinct bigrams end in each word)."""
    by_order, stats = {}, {}
    for k in range(2, order + 1):
        counts = part.counts[k]
        if k < order:
            continuation = part.extended[k] if k in part.extended else np.bincount(part.suffix(k + 1), minlength=len(counts))
            counts = adjusted(counts, part.first(k), continuation, bos)
        by_order[k] = counts
        stats[k] = counts_of_counts(counts)
    unigrams = None if order < 2 else part.extended[1] if 1 in part.extended else np.bincount(part.suffix(2), minlength=part.vocab_size)
    return by_order, (stats, unigrams)


def _send(part: Partition, adjusted_by_order: dict, k: int, parts: int, lower: np.ndarray) -> list:
    """At home: each order-k n-gram's context, adjusted count and suffix probability (``lower``: order
    k-1's here, the unigrams' at k = 2), to its context's home."""
    words = part.words(k)
    context = words[:, :-1]
    rows, bounds = _routes(_home(context, parts), parts)
    suffix_p = lower[part.suffix(k)]
    pieces = [(context[at], adjusted_by_order[k][at], suffix_p[at]) for at in (rows[bounds[q] : bounds[q + 1]] for q in range(parts))]
    return pieces if parts > 1 else pieces[0]  # one return is the value itself, not a list of one


def _receive(part: Partition, k: int, discounts: np.ndarray, parts: int, *pieces: tuple) -> list:
    """At the contexts' home: each context's back-off weight (aligned with order k-1 here; at k = 2 a
    unigram's, by word id), and each n-gram's probability, in the order each sender sent it."""
    context = np.concatenate([piece[0] for piece in pieces])
    a = np.concatenate([piece[1] for piece in pieces])
    lower = np.concatenate([piece[2] for piece in pieces])
    index = context[:, 0].astype(np.int64) if k == 2 else part.find(context)
    size = part.vocab_size if k == 2 else len(part.keys[k - 1])
    d = discount.apply(a, discounts)
    total = np.bincount(index, weights=a, minlength=size)
    gamma = np.divide(np.bincount(index, weights=d, minlength=size), total, out=np.ones(size), where=total > 0)
    p = np.subtract(a, d)
    p /= total[index]
    lower *= gamma[index]
    p += lower
    ends = np.cumsum([len(piece[1]) for piece in pieces])
    return [gamma, *np.split(p, ends[:-1])]


def _collect(part: Partition, k: int, parts: int, *returned: np.ndarray) -> np.ndarray:
    """At home: the order-k probabilities back from the contexts' homes, in this partition's order."""
    rows, _ = _routes(_home(part.words(k)[:, :-1], parts), parts)
    p = np.empty(len(rows))
    p[rows] = np.concatenate(returned)
    return p


def _write(folder: str, k: int, index: int, part: Partition, p: np.ndarray, gamma: np.ndarray | None) -> int:
    """One order's n-grams of one partition, with their counts, probabilities and back-off weights."""
    words = part.words(k)
    frame = pd.DataFrame(words, columns=[f"w{i}" for i in range(k)]).assign(
        count=part.counts[k], logp=_log(p), logbo=0.0 if gamma is None else np.log(gamma))
    if gamma is not None and k in part.extended:  # pruned: the continuation counts a saved model re-derives from
        frame["extended"] = part.extended[k]
    target = Path(folder) / f"order={k}" / f"part-{index:05d}.parquet"
    target.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(target, index=False)
    return len(frame)


@dataclass
class Counted:
    """The counts of a corpus on the cluster: order 1 on the driver, higher orders in partitions."""

    order: int
    vocab_size: int
    bos: int
    unigrams: np.ndarray
    merged: list  # one ObjectRef per partition (a ``Partition``)
    shards: int
    pruned: bool  # cut-offs applied: the partitions carry continuation counts from before them
    memory: int | None = None  # ngram.memory: a model read back on the driver that may outgrow it is spilled

    @property
    def parts(self) -> int:
        return len(self.merged)

    def tables(self, order: int) -> list[Table]:
        """The count tables of orders 1..``order``, as ``counts.count`` gives them, on the driver, an
        order at a time; spilled to disk (``spill``) where they may outgrow ``memory``."""
        import ray

        parts = [ray.get(ref) for ref in self.merged]  # views of the object store, not copies
        rows = self.vocab_size + sum(len(part.counts[k]) for part in parts for k in range(2, order + 1))
        store = spill.to(when=self.memory is not None and rows * MODEL_BYTES_PER_NGRAM > self.memory)
        tables = [unigram_table(self.unigrams.astype(_narrow(self.unigrams)))]
        pruned = order > 1 and parts[0].extended.get(1) is not None
        if pruned:  # each order's continuation counts, as prune() keeps them
            tables[0].extended = np.sum([part.extended[1] for part in parts], axis=0)
        for k in range(2, order + 1):
            sorted_rows = _add_table(tables, np.concatenate([part.words(k) for part in parts]),
                                     np.concatenate([part.counts[k] for part in parts]), self.vocab_size)
            if pruned and k < order:
                tables[-1].extended = np.concatenate([part.extended[k] for part in parts])[sorted_rows]
            del sorted_rows
            spilled(tables[-1], store)
        return tables


def _narrow(unigram_counts: np.ndarray):
    """The counts' width, as ``counts.count`` chooses it: 4 bytes below 2**31 positions."""
    return np.int32 if unigram_counts.sum() < np.iinfo(np.int32).max else np.int64


def _add_table(tables: list[Table], words: np.ndarray, counts: np.ndarray, vocab_size: int) -> np.ndarray:
    """The next order's table from its rows of word ids and counts in any row order, appended to
    ``tables``; the permutation that sorted the rows."""
    narrow = tables[0].counts.dtype
    table, rows = table_from_words(words, counts.astype(narrow), tables, vocab_size)
    table.suffix = table.suffix.astype(narrow)
    tables.append(table)
    return rows


def count_on_ray(path: str | Path, vocab, order: int, memory: int, cutoffs: list[int], parts: int | None = None,
                 shard_bytes: int | None = None, retries: int = RETRIES, progress: bool = True) -> Counted:
    """Count every n-gram of orders 1..``order`` in the token file ``path`` on the connected Ray
    instance: shards of ``shard_bytes`` of text (default: about as much as ``memory`` counts at once),
    ``parts`` partitions (default: the cluster's CPUs, or as many as keep a partition's merge within
    ``memory``)."""
    import ray

    from seqlab.vocab import BOS

    path = Path(path).resolve()
    if not path.is_file():
        raise SeqLabError(f"{path}: file not found")
    if not parts:  # the cluster's CPUs, or more where a partition's merge would not fit the budget
        most = path.stat().st_size // TEXT_BYTES_PER_POSITION * max(order - 1, 1)  # n-grams of orders 2.., at most about
        parts = max(1, int(ray.cluster_resources().get("CPU", 1)), -(-most * MERGE_BYTES_PER_NGRAM // memory))
    shard_bytes = shard_bytes or max(memory // BYTES_PER_POSITION * TEXT_BYTES_PER_POSITION, 1 << 16)
    ranges = line_ranges(path, shard_bytes) or [(0, 0)]
    vocab_ref = ray.put(vocab)
    task = ray.remote(_count_shard).options(num_returns=1 + parts, max_retries=retries)
    counted = [task.remote(str(path), start, stop, vocab_ref, order, memory, parts) for start, stop in ranges]
    unigrams = _gather([shard[0] for shard in counted], f"ngram: counting {path.name} in {len(ranges)} shard(s)", progress, retries)
    merge = ray.remote(_merge).options(max_retries=retries)
    marker = os.environ.get(FAULT_ENV)
    merged = [merge.remote(order, len(vocab), cutoffs, marker, *[shard[1 + p] for shard in counted]) for p in range(parts)]
    del counted  # the shards' pieces go once merged
    _gather(merged, f"ngram: merging {parts} partition(s)", progress, retries)
    return Counted(order, len(vocab), vocab.index[BOS], np.sum(unigrams, axis=0), merged, len(ranges), any(cutoffs), memory)


def estimate_on_ray(counted: Counted, estimator: str, order: int, folder: str | Path, retries: int = RETRIES,
                    progress: bool = True, read: bool = True) -> NGramModel | dict:
    """Kneser-Ney (``kn``) or modified Kneser-Ney (``mkn``) of order ``order`` from ``counted``: the
    Parquet files in ``folder`` (written whole or not at all) and the model they hold (with ``read``
    false, only its settings, for ``read_model`` to read once the cluster's memory is given back)."""
    import ray

    if estimator not in ("kn", "mkn"):
        raise SeqLabError(f"ngram.engine: ray estimates kn and mkn on the cluster, not {estimator!r}")
    if not 1 <= order <= counted.order:
        raise SeqLabError(f"order {order} was not counted (counted up to {counted.order})")
    parts, bos, size, merged = counted.parts, counted.bos, counted.vocab_size, counted.merged
    name = f"ngram {estimator}-{order}"
    adjust = ray.remote(_adjust).options(num_returns=2, max_retries=retries)
    adjusted, stats = zip(*[adjust.remote(ref, order, bos) for ref in merged]) if order >= 2 else ((), ())
    stats = _gather(list(stats), f"{name}: adjusting counts", progress, retries)
    # discounts and order 1 on the driver, as the single-process build computes them
    choose = discount.modified_kneser_ney if estimator == "mkn" else discount.kneser_ney
    a = counted.unigrams.copy() if order == 1 else np.sum([unigrams for _, unigrams in stats], axis=0)
    continuation, pruned = a.copy(), counted.pruned
    a[bos] = 0
    discounts = [choose(a)]
    for k in range(2, order + 1):
        discounts.append(discount.from_counts_of_counts(np.sum([part[k] for part, _ in stats], axis=0), modified=estimator == "mkn"))
    unigram_p = kneser_ney_unigrams(a, bos, discounts[0])
    unigram_bo = np.ones(size)
    send = ray.remote(_send).options(num_returns=parts, max_retries=retries)
    receive = ray.remote(_receive).options(num_returns=1 + parts, max_retries=retries)
    collect = ray.remote(_collect).options(max_retries=retries)
    write = ray.remote(_write).options(max_retries=retries)
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        written, lower = [], [ray.put(unigram_p)] * parts
        for k in range(2, order + 1):
            sent = [send.remote(merged[p], adjusted[p], k, parts, lower[p]) for p in range(parts)]
            sent = [pieces if parts > 1 else [pieces] for pieces in sent]
            received = [receive.remote(merged[q], k, discounts[k - 1], parts, *[sent[p][q] for p in range(parts)])
                        for q in range(parts)]
            del sent
            probs = [collect.remote(merged[p], k, parts, *[received[q][1 + p] for q in range(parts)]) for p in range(parts)]
            gammas = [pieces[0] for pieces in received]
            del received
            if k == 2:
                for gamma in _gather(gammas, f"{name}: interpolating order 2", progress, retries):
                    unigram_bo *= gamma  # 1 but where the unigram is a context at home
            else:  # order k-1 is complete: its probabilities, and its back-off weights from order k's contexts
                written += [write.remote(str(tmp), k - 1, p, merged[p], lower[p], gammas[p]) for p in range(parts)]
                _gather(gammas, f"{name}: interpolating order {k}", progress, retries)
            lower = probs
        if order >= 2:
            written += [write.remote(str(tmp), order, p, merged[p], lower[p], None) for p in range(parts)]
        _gather(written, f"{name}: writing Parquet", progress, retries)
        unigrams = pd.DataFrame({"w0": np.arange(size, dtype=np.int32), "count": counted.unigrams,
                                 "logp": _log(unigram_p), "logbo": np.log(unigram_bo)})
        if order > 1 and pruned:
            unigrams["extended"] = continuation
        (tmp / "order=1").mkdir()
        unigrams.to_parquet(tmp / "order=1" / "part-00000.parquet", index=False)
    params = {"discounts": [list(map(float, x)) for x in discounts]}
    if not read:
        return params
    model = read_model(folder, estimator, order, size, bos, counted.memory)
    model.params = params
    return model


def read_model(folder: str | Path, estimator: str, order: int, vocab_size: int, bos: int,
               memory: int | None = None) -> NGramModel:
    """The model in the Parquet files of ``estimate_on_ray``: tables, log-probabilities and back-off
    weights, read an order at a time (what is read of an order goes once its table is built). A model
    that may outgrow ``memory`` (bytes) is spilled to disk an order at a time, as ``counts.count``
    spills."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    rows = sum(pq.ParquetFile(path).metadata.num_rows for k in range(1, order + 1) for path in (folder / f"order={k}").glob("*.parquet"))
    store = spill.to(when=memory is not None and rows * MODEL_BYTES_PER_NGRAM > memory)
    unigrams = pd.read_parquet(folder / "order=1").sort_values("w0")
    counts = unigrams["count"].to_numpy()
    tables = [unigram_table(counts.astype(_narrow(counts)))]
    logp, logbo = [unigrams["logp"].to_numpy()], [unigrams["logbo"].to_numpy()]
    if "extended" in unigrams:
        tables[0].extended = unigrams["extended"].to_numpy()
    for k in range(2, order + 1):
        frame = pq.read_table(folder / f"order={k}")

        def take(name: str) -> np.ndarray:  # a column as numpy, its Arrow buffers given back at once
            nonlocal frame
            column = frame.column(name).to_numpy()
            frame = frame.drop_columns([name])
            return column

        words = np.stack([take(f"w{i}") for i in range(k)], axis=1)  # 4-byte ids
        rows = _add_table(tables, words, take("count"), vocab_size)
        del words
        table = tables[-1]
        logp.append(store(take("logp")[rows]))
        logbo.append(store(take("logbo")[rows]))
        if "extended" in frame.column_names:
            table.extended = take("extended")[rows]
        del frame, rows
        spilled(table, store)
        spill.forget(*(array for lower in tables[:-1] for array in (lower.keys, lower.counts, lower.suffix, lower.first)))
    return NGramModel(estimator, order, vocab_size, bos, tables, logp=logp, logbo=logbo)


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


def _gather(refs: list, what: str, progress: bool, retries: int = RETRIES) -> list:
    """The results of ``refs`` with a bar over them; a failed task is one line naming what failed."""
    import ray
    from tqdm import tqdm

    results, pending = {}, {ref: i for i, ref in enumerate(refs)}
    with tqdm(total=len(refs), desc=what, unit="task", disable=not progress, leave=False) as bar:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            for ref in done:
                try:
                    results[pending.pop(ref)] = ray.get(ref)
                except Exception as err:  # RayTaskError, WorkerCrashedError, ...: one line
                    os.environ["RAY_IGNORE_UNHANDLED_ERRORS"] = "1"  # not a traceback for each sibling task that failed alike
                    if isinstance(err, SeqLabError):  # the input's own error, from the task: not retried
                        raise SeqLabError(f"{what}: {error_line(err)}") from None
                    raise SeqLabError(f"{what}: a task failed after {retries} retries: {error_line(err)}") from None
                bar.update(1)
    return [results[i] for i in range(len(refs))]
