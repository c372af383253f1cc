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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from seqlab.errors import SeqLabError
from seqlab.io import atomic_path, create_once, line_ranges
from seqlab.ngram import discount
from seqlab.ngram.counts import BYTES_PER_POSITION, Table, count, table_from_words, unigram_table
from seqlab.ngram.discount import counts_of_counts
from seqlab.ngram.estimate import NGramModel, uniform_unigrams
from seqlab.scoring import read_eval_set
from seqlab.tune.cluster import error_line

FAULT_ENV = "SEQLAB_FAULT_NGRAM_TASK_EXIT"  # a marker path: the first merge task to create it dies (fault tests)
TEXT_BYTES_PER_POSITION = 6  # a token and its space, about: a shard's text for the positions the budget counts at once
RETRIES = 3  # a task whose worker dies is run again this often (Ray's lineage keeps its inputs)


def _columns(k: int) -> list[str]:
    return [f"w{i}" for i in range(k)]


def _home(frame: pd.DataFrame, columns: list[str], parts: int) -> np.ndarray:
    """The partition of each row: a hash of its last two ``columns`` (one for a unigram)."""
    h = frame[columns[-1]].to_numpy().astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15)
    if len(columns) > 1:
        h ^= frame[columns[-2]].to_numpy().astype(np.uint64) * np.uint64(0xC2B2AE3D27D4EB4F)
    h ^= h >> np.uint64(31)
    h *= np.uint64(0x94D049BB133111EB)
    h ^= h >> np.uint64(29)
    return (h % np.uint64(parts)).astype(np.int64)


def _split(frame: pd.DataFrame, home: np.ndarray, parts: int) -> list[pd.DataFrame]:
    order = np.argsort(home, kind="stable")
    bounds = np.searchsorted(home[order], np.arange(parts + 1))
    return [frame.iloc[order[bounds[p] : bounds[p + 1]]].reset_index(drop=True) for p in range(parts)]


def _count_shard(path: str, start: int, stop: int, vocab, order: int, memory: int, parts: int) -> list:
    """Count one shard: its unigram counts, then for each partition the shard's n-grams of orders
    2..``order`` living there (one frame per order)."""
    segments = read_eval_set(path, vocab, 0, start, stop).segments
    tables = count(segments, order, len(vocab), memory)
    del segments
    words = tables[0].word[:, None].astype(np.int32)
    per_part: list[list[pd.DataFrame]] = [[] for _ in range(parts)]
    for table in tables[1:]:
        words = np.hstack([words[table.prefix], table.word.astype(np.int32)[:, None]])
        columns = _columns(table.order)
        frame = pd.DataFrame(words, columns=columns).assign(count=table.counts.astype(np.int64))
        for p, piece in enumerate(_split(frame, _home(frame, columns, parts), parts)):
            per_part[p].append(piece)
    return [tables[0].counts.astype(np.int64), *per_part]


def _merge(order: int, cutoffs: list[int], marker: str | None, *pieces: list[pd.DataFrame]) -> dict[int, pd.DataFrame]:
    """One partition's n-grams of every order, counts summed over the shards, cut-offs applied."""
    if marker and create_once(marker):
        os._exit(1)  # a worker lost mid-pass: Ray runs the task again
    merged = {}
    for k in range(2, order + 1):
        frame = pd.concat([piece[k - 2] for piece in pieces], ignore_index=True)
        frame = frame.groupby(_columns(k), sort=False, as_index=False)["count"].sum()
        threshold = cutoffs[min(k, len(cutoffs)) - 1] if cutoffs else 0
        merged[k] = frame[frame["count"] > threshold].reset_index(drop=True) if threshold else frame
    return merged


def _adjust(merged: dict[int, pd.DataFrame], order: int, bos: int, vocab_size: int) -> tuple:
    """Adjusted counts of orders 2..``order`` (raw at the top, continuation counts below but for
    n-grams starting with ``<s>``), their counts of counts, and this partition's share of the unigrams'
    continuation counts (how many distinct bigrams end in each word)."""
    adjusted, stats = {}, {}
    for k in range(2, order + 1):
        frame = merged[k]
        if k == order:
            a = frame["count"].to_numpy()
        else:
            higher = merged[k + 1]
            extended = higher.groupby(_columns(k + 1)[1:], sort=False).size().rename("extended").reset_index()
            extended.columns = [*_columns(k), "extended"]
            continuation = frame.merge(extended, on=_columns(k), how="left")["extended"].fillna(0).to_numpy(np.int64)
            a = np.where(frame["w0"].to_numpy() == bos, frame["count"].to_numpy(), continuation)
        adjusted[k] = frame[_columns(k)].assign(a=a)
        stats[k] = counts_of_counts(a)
    unigrams = np.bincount(merged[2]["w1"].to_numpy(), minlength=vocab_size) if order >= 2 else np.zeros(vocab_size, np.int64)
    return adjusted, (stats, unigrams)


def _send(adjusted: dict[int, pd.DataFrame], k: int, discounts: np.ndarray, parts: int, unigram_p, *lower: pd.DataFrame) -> list:
    """At home: each order-k n-gram's adjusted count, discount and suffix probability, to its context's home."""
    frame = adjusted[k]
    frame = frame.assign(d=discount.apply(frame["a"].to_numpy(), discounts))
    if k == 2:
        lower_p = unigram_p[frame["w1"].to_numpy()]
    else:
        below = pd.concat(lower, ignore_index=True)
        below.columns = [*_columns(k)[1:], "p"]
        lower_p = frame.merge(below, on=_columns(k)[1:], how="left")["p"].to_numpy()
    frame = frame.assign(lower=lower_p)
    context = _columns(k - 1)
    pieces = _split(frame, _home(frame, context, parts), parts)
    return pieces if parts > 1 else pieces[0]  # one return is the value itself, not a list of one


def _receive(k: int, parts: int, *pieces: pd.DataFrame) -> list:
    """At the contexts' home: each context's back-off weight, and each n-gram's probability, sent home."""
    frame = pd.concat(pieces, ignore_index=True)
    context = _columns(k - 1)
    sums = frame.groupby(context, sort=False, as_index=False)[["a", "d"]].sum()
    total = sums["a"].to_numpy().astype(np.float64)
    sums["gamma"] = np.divide(sums["d"].to_numpy(), total, out=np.ones(len(sums)), where=total > 0)
    sums["total"] = total
    frame = frame.merge(sums[[*context, "total", "gamma"]], on=context, how="left")
    p = np.subtract(frame["a"].to_numpy(), frame["d"].to_numpy())
    p /= frame["total"].to_numpy()
    lower = frame["lower"].to_numpy() * frame["gamma"].to_numpy()
    p += lower
    probs = frame[_columns(k)].assign(p=p)
    return [sums[[*context, "gamma"]], *_split(probs, _home(probs, _columns(k), parts), parts)]


def _write(folder: str, k: int, part: int, top: bool, merged: dict[int, pd.DataFrame], n_probs: int, *rest: pd.DataFrame) -> int:
    """One order's n-grams of one partition, with their counts, probabilities and back-off weights."""
    columns = _columns(k)
    probs = pd.concat(rest[:n_probs], ignore_index=True)
    frame = merged[k].merge(probs, on=columns, how="left")
    frame["logp"] = np.log(frame.pop("p").to_numpy())
    if top:
        frame["logbo"] = 0.0
    else:
        gammas = pd.concat(rest[n_probs:], ignore_index=True)
        frame = frame.merge(gammas, on=columns, how="left")
        frame["logbo"] = np.log(frame.pop("gamma").fillna(1.0).to_numpy())
    target = Path(folder) / f"order={k}" / f"part-{part:05d}.parquet"
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
    merged: list  # one ObjectRef per partition: {order: frame of w0.., count}
    shards: int

    @property
    def parts(self) -> int:
        return len(self.merged)

    def tables(self, order: int) -> list[Table]:
        """The count tables of orders 1..``order``, as ``counts.count`` gives them, on the driver."""
        import ray

        frames = {k: [] for k in range(2, order + 1)}
        for ref in self.merged:
            part = ray.get(ref)
            for k in frames:
                frames[k].append(part[k])
        return _tables(self.unigrams, [pd.concat(frames[k], ignore_index=True) for k in range(2, order + 1)], self.vocab_size)[0]


def _tables(unigrams: np.ndarray, frames: list[pd.DataFrame], vocab_size: int) -> tuple[list[Table], list[np.ndarray]]:
    """Count tables from each order's frame (any row order), and the permutation that sorted each frame."""
    narrow = np.int32 if unigrams.sum() < np.iinfo(np.int32).max else np.int64
    tables, orders = [unigram_table(unigrams.astype(narrow))], [np.arange(vocab_size)]
    for k, frame in enumerate(frames, start=2):
        words = frame[_columns(k)].to_numpy(np.int64)
        table, order = table_from_words(words, frame["count"].to_numpy().astype(narrow), tables, vocab_size)
        table.suffix = table.suffix.astype(narrow)
        tables.append(table)
        orders.append(order)
    return tables, orders


def count_on_ray(path: str | Path, vocab, order: int, memory: int, cutoffs: list[int], parts: int | None = None,
                 shard_bytes: int | None = None, retries: int = RETRIES, progress: bool = True) -> Counted:
    """Count every n-gram of orders 1..``order`` in the token file ``path`` on the connected Ray
    instance: shards of ``shard_bytes`` of text (default: about as much as ``memory`` counts at once),
    ``parts`` partitions (default: the cluster's CPUs)."""
    import ray

    from seqlab.vocab import BOS

    path = Path(path).resolve()
    if not path.is_file():
        raise SeqLabError(f"{path}: file not found")
    parts = parts or max(1, int(ray.cluster_resources().get("CPU", 1)))
    shard_bytes = shard_bytes or max(memory // BYTES_PER_POSITION * TEXT_BYTES_PER_POSITION, 1 << 16)
    ranges = line_ranges(path, shard_bytes) or [(0, 0)]
    vocab_ref = ray.put(vocab)
    task = ray.remote(_count_shard).options(num_returns=1 + parts, max_retries=retries)
    counted = [task.remote(str(path), start, stop, vocab_ref, order, memory, parts) for start, stop in ranges]
    unigrams = _gather([shard[0] for shard in counted], f"ngram: counting {path.name} in {len(ranges)} shard(s)", progress, retries)
    merge = ray.remote(_merge).options(max_retries=retries)
    marker = os.environ.get(FAULT_ENV)
    merged = [merge.remote(order, cutoffs, marker, *[shard[1 + p] for shard in counted]) for p in range(parts)]
    _gather(merged, f"ngram: merging {parts} partition(s)", progress, retries)
    return Counted(order, len(vocab), vocab.index[BOS], np.sum(unigrams, axis=0), merged, len(ranges))


def estimate_on_ray(counted: Counted, estimator: str, order: int, folder: str | Path, retries: int = RETRIES,
                    progress: bool = True) -> NGramModel:
    """Kneser-Ney (``kn``) or modified Kneser-Ney (``mkn``) of order ``order`` from ``counted``: the
    Parquet files in ``folder`` (written whole or not at all) and the model they hold."""
    import ray

    if estimator not in ("kn", "mkn"):
        raise SeqLabError(f"ngram.engine: ray estimates kn and mkn on the cluster, not {estimator!r}")
    if not 1 <= order <= counted.order:
        raise SeqLabError(f"order {order} was not counted (counted up to {counted.order})")
    parts, bos, size = counted.parts, counted.bos, counted.vocab_size
    adjust = ray.remote(_adjust).options(num_returns=2, max_retries=retries)
    adjusted, stats = zip(*[adjust.remote(ref, order, bos, size) for ref in counted.merged]) if order >= 2 else ((), ())
    stats = _gather(list(stats), f"ngram {estimator}-{order}: adjusting counts", progress, retries)
    choose = discount.modified_kneser_ney if estimator == "mkn" else discount.kneser_ney
    # order 1 on the driver, as the single-process build does it
    a = counted.unigrams.copy() if order == 1 else np.sum([unigrams for _, unigrams in stats], axis=0)
    a[bos] = 0
    discounts = [choose(a)]
    for k in range(2, order + 1):
        n = np.sum([part[k] for part, _ in stats], axis=0)
        discounts.append(discount.from_counts_of_counts(n, modified=estimator == "mkn"))
    d = discount.apply(a, discounts[0])
    total = a.sum()
    unigram_p = uniform_unigrams(size, bos, (a - d) / total, d.sum() / total)
    unigram_ref = ray.put(unigram_p)
    send = ray.remote(_send).options(num_returns=parts, max_retries=retries)
    receive = ray.remote(_receive).options(num_returns=1 + parts, max_retries=retries)
    probs, gammas = {}, {}  # per order: [partition][piece] refs at home; per context order: refs at the context's home
    for k in range(2, order + 1):
        sent = [send.remote(adjusted[p], k, discounts[k - 1], parts, unigram_ref, *(probs[k - 1][p] if k > 2 else []))
                for p in range(parts)]
        sent = [pieces if parts > 1 else [pieces] for pieces in sent]
        received = [receive.remote(k, parts, *[sent[p][q] for p in range(parts)]) for q in range(parts)]
        gammas[k - 1] = [pieces[0] for pieces in received]
        probs[k] = [[received[q][1 + p] for q in range(parts)] for p in range(parts)]
        _gather(gammas[k - 1], f"ngram {estimator}-{order}: interpolating order {k}", progress, retries)
    unigram_bo = np.ones(size)
    if order >= 2:
        for frame in ray.get(gammas[1]):
            unigram_bo[frame["w0"].to_numpy()] = frame["gamma"].to_numpy()
    folder = Path(folder)
    with atomic_path(folder) as tmp:
        tmp.mkdir(parents=True)
        write = ray.remote(_write).options(max_retries=retries)
        written = [write.remote(str(tmp), k, p, k == order, counted.merged[p], len(probs[k][p]),
                                *probs[k][p], *([gammas[k][p]] if k < order else []))
                   for k in range(2, order + 1) for p in range(parts)]
        _gather(written, f"ngram {estimator}-{order}: writing Parquet", progress, retries)
        pd.DataFrame({"w0": np.arange(size, dtype=np.int32), "count": counted.unigrams,
                      "logp": _log(unigram_p), "logbo": _log(unigram_bo)}).to_parquet(
            _mkdir(tmp / "order=1") / "part-00000.parquet", index=False)
    model = read_model(folder, estimator, order, size, bos)
    model.params = {"discounts": [list(map(float, x)) for x in discounts]}
    return model


def read_model(folder: str | Path, estimator: str, order: int, vocab_size: int, bos: int) -> NGramModel:
    """The model in the Parquet files of ``estimate_on_ray``: tables, log-probabilities and back-off weights."""
    folder = Path(folder)
    frames = [pd.read_parquet(folder / f"order={k}") for k in range(1, order + 1)]
    unigrams = frames[0].sort_values("w0")
    tables, orders = _tables(unigrams["count"].to_numpy(), frames[1:], vocab_size)
    logp = [unigrams["logp"].to_numpy()] + [f["logp"].to_numpy()[o] for f, o in zip(frames[1:], orders[1:])]
    logbo = [unigrams["logbo"].to_numpy()] + [f["logbo"].to_numpy()[o] for f, o in zip(frames[1:], orders[1:])]
    return NGramModel(estimator, order, vocab_size, bos, tables, logp=logp, logbo=logbo)


def _log(x: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore"):
        return np.log(x)


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


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
                    raise SeqLabError(f"{what}: a task failed (retried up to {retries} times): {error_line(err)}") from None
                bar.update(1)
    return [results[i] for i in range(len(refs))]
