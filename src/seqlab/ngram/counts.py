"""Step 1, count: n-gram tables of every order, built with numpy over integer ids.

Sentences are padded as ``<s> w1 ... wm </s>`` (one ``<s>``, one ``</s>``) and every window of
length 1..N inside a sentence is counted. An order-k table is keyed by ``prefix * V + word``,
where ``prefix`` is the rank of the (k-1)-gram prefix in the order k-1 table (for order 1 the
rank is the word id itself: the unigram table holds the whole vocabulary). Keys are sorted, so a
table is the lexicographically sorted list of its n-grams, and looking one up is a binary search.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from seqlab.errors import SeqLabError
from seqlab.ngram import parallel, spill
from seqlab.scoring import Segments


@dataclass
class Table:
    """The n-grams of one order, sorted; ``suffix`` is the rank of each n-gram without its first word.
    Prefix ranks and last words are read off the keys rather than stored: 20 bytes an n-gram."""

    order: int
    keys: np.ndarray  # int64, sorted unique: prefix * V + word (order 1: the word id)
    counts: np.ndarray  # raw counts: int32 as counted from fewer than 2**31 positions, else int64
    suffix: np.ndarray  # rank of the suffix in the order-1 table, int32 or int64 as counts (order 1: -1)
    first: np.ndarray  # int32 first word
    vocab_size: int
    extended: np.ndarray | None = None  # after pruning: distinct words seen before each n-gram among all counted ones


    def __len__(self) -> int:
        return len(self.keys)

    @property
    def prefix(self) -> np.ndarray:
        """int64 rank of the (order-1)-gram prefix (order 1: 0; -1 where the lower table lacks it)."""
        return self.keys // self.vocab_size

    @property
    def word(self) -> np.ndarray:
        """int64 last word."""
        return self.keys % self.vocab_size


def spilled(table: Table, store) -> Table:
    """``table`` with its columns handed to ``store`` (a ``spill.to`` or ``spill.like``), in place."""
    table.keys, table.counts, table.suffix, table.first = map(store, (table.keys, table.counts, table.suffix, table.first))
    if table.extended is not None:
        table.extended = store(table.extended)
    return table


def unigram_table(counts: np.ndarray) -> Table:
    """Order 1 holds the whole vocabulary; a word's rank is its id."""
    vocab = np.arange(len(counts), dtype=np.int64)
    return Table(1, vocab, counts, np.full(len(counts), -1, dtype=np.int32), vocab.astype(np.int32), len(counts))


def rank_of(tables: list[Table], words: np.ndarray, vocab_size: int) -> np.ndarray:
    """Rank of each row of ``words`` (an n-gram, read left to right) in its order's table, or -1."""
    rank = words[:, 0].astype(np.int64)
    for j in range(1, words.shape[1]):
        rank = lookup(tables[j], rank, words[:, j], vocab_size)
    return rank


def table_from_words(words: np.ndarray, counts: np.ndarray, tables: list[Table], vocab_size: int) -> tuple[Table, np.ndarray]:
    """The order-k table of the n-grams in the rows of ``words`` (k columns), given the lower tables;
    also the permutation that sorted the rows. A prefix missing from the lower table has rank -1.
    ``words`` may be 4-byte ids: nothing of the rows' size is copied in 8 bytes."""
    rows = len(words)
    keys, suffix = np.empty(rows, dtype=np.int64), np.empty(rows, dtype=np.int64)
    for start in range(0, rows, LOOKUP_ROWS):  # the lookups' working arrays for a slice of rows at a time
        part = words[start:start + LOOKUP_ROWS]
        at = slice(start, start + len(part))
        keys[at] = rank_of(tables, part[:, :-1], vocab_size)
        keys[at] *= vocab_size
        keys[at] += part[:, -1]
        suffix[at] = rank_of(tables, part[:, 1:], vocab_size)
    order = np.argsort(keys, kind="stable")
    keys, suffix = keys[order], suffix[order]  # the unsorted arrays go as the sorted ones come
    table = Table(words.shape[1], keys, counts[order], suffix, words[order, 0].astype(np.int32), vocab_size)
    return table, order


def lookup(table: Table, prefix: np.ndarray, word: np.ndarray, vocab_size: int) -> np.ndarray:
    """Rank of each (prefix rank, word) n-gram in ``table``, or -1 where it is absent or prefix < 0.
    Many n-grams at once (a table built from another's words) are searched for in key order, so the
    search walks the table once instead of missing the cache at every step."""
    if table.order == 1:
        return word.copy()
    key = prefix * vocab_size + word
    if len(key) > SORTED_LOOKUPS:
        order = np.argsort(key)
        idx = np.empty(len(key), dtype=np.int64)
        idx[order] = np.searchsorted(table.keys, key[order])
        del order
    else:
        idx = np.searchsorted(table.keys, key)
    idx_clipped = np.minimum(idx, max(len(table.keys) - 1, 0))
    found = (prefix >= 0) & (idx < len(table.keys))
    if len(table.keys):
        found &= table.keys[idx_clipped] == key
    return np.where(found, idx_clipped, -1)


def ranks_ending_at(tables: list[Table], segments: Segments, vocab_size: int) -> list[np.ndarray]:
    """``ranks[k-1][t]``: rank of the k-gram ending at position t (-1 if absent or it would cross
    the segment start). The k-gram's prefix is the (k-1)-gram ending at t-1."""
    ids = segments.ids
    ranks = [ids.copy()]
    for table in tables[1:]:
        prev = np.full(len(ids), -1, dtype=np.int64)
        prev[1:] = ranks[-1][:-1]
        prev[segments.offset < table.order - 1] = -1
        ranks.append(lookup(table, prev, ids, vocab_size))
    return ranks


SORTED_LOOKUPS = 1 << 20  # more lookups than this at once are sorted first
LOOKUP_ROWS = 1 << 22  # a table built from rows of words looks up their prefixes and suffixes this many rows at a time
PARALLEL_WINDOWS = 1 << 20  # an order of fewer windows than this is counted in one part, on one thread
BYTES_PER_POSITION = 64  # what counting holds per window of a part: its position, key, and the sort's (`_unique`)
MODEL_BYTES_PER_NGRAM = 20 + 16  # a table's row, and the estimate's log-probability and back-off weight


def model_bytes(positions: int, order: int, vocab_size: int) -> int:
    """At most the memory of an order-``order`` model counted from ``positions`` train positions: each
    position starts at most one n-gram of each order 2..``order``, and order 1 is the vocabulary."""
    return (positions * max(order - 1, 0) + vocab_size) * MODEL_BYTES_PER_NGRAM


def count(segments: Segments, order: int, vocab_size: int, memory: int | None = None,
          spill_to: str | Path | None = None, threads: int | None = None) -> list[Table]:
    """Count every n-gram of order 1..``order`` in ``segments``. Each order is counted in parts, ranges
    of the sorted keys (a frequent prefix split by its next word), sorted on ``threads`` threads
    (default: one per core) at once; with a ``memory`` budget (bytes) the parts in flight fit it
    together, and a model that may outgrow the budget (``model_bytes``) has each order's table
    spilled to ``spill_to`` (default: the system's temporary folder) as soon as it is counted. The
    tables are the same whatever the budget and the threads. A budget smaller than the windows of one
    n-gram is refused."""
    ids = segments.ids
    n = len(ids)
    threads = threads or parallel.cores()
    store = spill.to(spill_to, when=memory is not None and model_bytes(n, order, vocab_size) > memory)
    narrow = np.int32 if n < np.iinfo(np.int32).max else np.int64  # ranks and counts below n: 4 bytes where they fit
    tables = [unigram_table(np.bincount(ids, minlength=vocab_size).astype(narrow))]
    position_rank = ids.astype(narrow)  # rank of the (k-1)-gram starting at each position
    with ThreadPoolExecutor(threads) as pool:
        for k in range(2, order + 1):
            windows = max(n - k + 1, 0)
            inside = segments.offset[k - 1 : k - 1 + windows] >= k - 1  # windows at 0..n-k that stay in their segment
            prefix_rank = position_rank[:windows]
            parts = _parts(tables[-1].counts, prefix_rank, inside, ids[k - 1 : k - 1 + windows], vocab_size, memory, k, threads)
            spill.forget(tables[-1].counts)
            next_rank = np.full(n, -1, dtype=narrow)
            # the order's table, filled part by part: sized for every window, of which only the n-grams found
            # are ever written (untouched pages take no memory), then cut to them; no second copy is made
            most = int(inside.sum())
            columns = (np.empty(most, np.int64), np.empty(most, narrow), np.empty(most, narrow), np.empty(most, np.int32))
            # each part writes its n-grams and its windows' ranks itself, at the offset the parts before it
            # leave: a part hands the next its offset as soon as it knows how many n-grams it holds
            offsets = [Future() for _ in range(len(parts) + 1)]
            offsets[0].set_result(0)
            work = partial(_count_part, ids, position_rank, inside, k, vocab_size, len(parts) == 1, columns, next_rank)
            for _ in parallel.in_order(pool, work, zip(parts, offsets, offsets[1:]), ahead=threads - 1):
                pass
            ranked = offsets[-1].result()
            for column in columns:
                column.resize(ranked, refcheck=False)  # in place: the unused end is given back
            tables.append(Table(k, *map(store, columns), vocab_size))
            del columns
            position_rank = next_rank
    return tables


def _count_part(ids: np.ndarray, position_rank: np.ndarray, inside: np.ndarray, k: int, vocab_size: int, whole: bool,
                columns: tuple[np.ndarray, ...], next_rank: np.ndarray, work: tuple[tuple[int, int], Future, Future]) -> None:
    """Count the windows whose keys fall in a part's bounds (every window inside a segment when
    ``whole``): their n-grams into ``columns`` and each window's rank into ``next_rank``, after the
    n-grams of the parts before it (their number: the part's ``offset``; it sets ``following``)."""
    (low, high), offset, following = work
    try:
        prefix_rank = position_rank[: len(inside)]
        if whole:
            starts = np.flatnonzero(inside)
        else:  # the prefixes the range touches, then the keys inside it
            starts = np.flatnonzero(inside & (prefix_rank >= low // vocab_size) & (prefix_rank <= (high - 1) // vocab_size))
        keys = prefix_rank[starts].astype(np.int64) * vocab_size + ids[starts + k - 1]
        if not whole and (low % vocab_size or high % vocab_size):  # a prefix split between parts
            keep = (keys >= low) & (keys < high)
            starts, keys = starts[keep], keys[keep]
        unique, first_index, inverse, counts = _unique(keys)
        del keys
        ranked = offset.result()
        following.set_result(ranked + len(unique))
    except BaseException as error:  # the parts after this one stop waiting
        if not following.done():
            following.set_exception(error)
        raise
    next_rank[starts] = inverse + ranked
    del inverse
    at = starts[first_index]  # one occurrence of each n-gram; the (k-1)-gram starting one later is its suffix
    for column, values in zip(columns, (unique, counts, position_rank[at + 1], ids[at])):
        column[ranked : ranked + len(unique)] = values


def _unique(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``np.unique(keys, return_index=True, return_inverse=True, return_counts=True)``, but the index
    is of any one occurrence, not the first: an unstable sort, a third faster on a part's keys."""
    order = np.argsort(keys)
    ordered = keys[order]
    starts = np.empty(len(keys), dtype=bool)
    starts[:1] = True
    np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
    inverse = np.empty(len(keys), dtype=np.intp)
    inverse[order] = np.cumsum(starts) - 1
    at = np.flatnonzero(starts)
    return ordered[at], order[at], inverse, np.diff(at, append=len(keys))


def _parts(per_prefix: np.ndarray, prefix_rank: np.ndarray, inside: np.ndarray, last: np.ndarray, vocab_size: int,
           memory: int | None, k: int, threads: int = 1) -> list[tuple[int, int]]:
    """Ranges [low, high) of keys, about a share of ``memory`` for each of ``threads`` parts in flight
    (one range for all without a budget or a second thread; with a second thread, past
    ``PARALLEL_WINDOWS``, at least one part a thread). Cells of the key space are cut greedily: a
    prefix whole, or, where its windows alone exceed a part, the prefix followed by each next word
    (``last``: the window's last word); a cell larger than a part is a part of its own. A prefix's
    windows are bounded by its count, ``per_prefix`` (the lower order's counts: an occurrence at a
    segment's end starts no window), so no pass over the windows is needed but for a split prefix."""
    prefixes = len(per_prefix)
    end = prefixes * vocab_size
    total = int(inside.sum())
    fits = total if memory is None else memory // BYTES_PER_POSITION // threads
    if threads > 1 and total >= PARALLEL_WINDOWS:
        fits = min(fits, -(-int(per_prefix.sum(dtype=np.int64)) // threads))
    if total <= fits:
        return [(0, end)]
    fits = max(fits, 1)
    runs, start = [], 0  # runs of cells: (the key of a run's i-th cell, the windows of each cell)
    for prefix in np.flatnonzero(per_prefix > fits).tolist():  # few: together they hold at most all windows
        runs.append((lambda i, first=start: (first + i) * vocab_size, per_prefix[start:prefix]))
        per_word = np.bincount(last[inside & (prefix_rank == prefix)], minlength=vocab_size)
        if memory is not None and per_word.max() * BYTES_PER_POSITION > memory:
            raise SeqLabError(f"ngram.memory: {memory:,} bytes cannot hold the {int(per_word.max()):,} windows of one "
                              f"order-{k} n-gram (at least {int(per_word.max()) * BYTES_PER_POSITION:,} bytes); "
                              "give counting more memory")
        words = np.flatnonzero(per_word)
        runs.append((lambda i, keys=prefix * vocab_size + words: int(keys[i]), per_word[words]))
        start = prefix + 1
    runs.append((lambda i, first=start: (first + i) * vocab_size, per_prefix[start:]))
    lows, room = [0], fits  # where each part starts; the windows the open part may still take
    for key_of, windows in runs:  # greedy: a part takes the cells that still fit, a new part at least one
        cumulative, cell, taken = np.cumsum(windows), 0, 0
        while cell < len(windows):
            if windows[cell] > room and room < fits:  # the open part has taken cells: this one opens the next
                lows.append(key_of(cell))
                room = fits
            next_cell = max(int(np.searchsorted(cumulative, taken + room, side="right")), cell + 1)
            room -= int(cumulative[next_cell - 1]) - taken
            cell, taken = next_cell, int(cumulative[next_cell - 1])
    return list(zip(lows, lows[1:] + [end]))


def prune(tables: list[Table], cutoffs: list[int], vocab_size: int) -> list[Table]:
    """Drop n-grams seen ``cutoffs[k-1]`` times or fewer at order k (the last value holds for higher
    orders; unigrams are never dropped). Cut-offs must not decrease, so an n-gram's prefix and suffix
    are always kept when it is; ranks are renumbered so the tables stay consistent. Each kept n-gram
    below the top order keeps, as ``extended``, its continuation count over every counted n-gram
    (KenLM adjusts counts before pruning): otherwise a kept n-gram whose extensions were all dropped
    would have an adjusted count of 0, and a context whose continuations all had, no mass at all."""
    if not cutoffs or not any(cutoffs):
        return tables
    extended = [np.bincount(higher.suffix, minlength=len(lower)) for lower, higher in zip(tables, tables[1:])] + [None]
    pruned = [Table(1, tables[0].keys, tables[0].counts, tables[0].suffix, tables[0].first, vocab_size, extended[0])]
    new_rank = np.arange(vocab_size, dtype=np.int64)  # order 1 keeps every id
    store = spill.like(tables[-1].keys)  # spilled tables are pruned into spilled tables
    for table, continuation in zip(tables[1:], extended[1:]):
        threshold = cutoffs[min(table.order, len(cutoffs)) - 1]
        keep = table.counts > threshold
        prefix, suffix = new_rank[table.prefix[keep]], new_rank[table.suffix[keep]]
        word = table.word[keep]
        columns = (prefix * vocab_size + word, table.counts[keep], suffix, table.first[keep])
        pruned.append(Table(table.order, *map(store, columns), vocab_size,
                            None if continuation is None else store(continuation[keep])))
        spill.forget(table.keys, table.counts, table.suffix, table.first)
        new_rank = np.cumsum(keep) - 1
        new_rank[~keep] = -1
    return pruned
