"""Step 4, estimate: seven estimators over the count tables, and the one way to score them.

Backoff form (written to ARPA): ``kn`` (interpolated Kneser-Ney, one discount per order), ``mkn``
(modified Kneser-Ney, three discounts per order) and ``backoff`` (absolute-discount backoff: Katz's
scheme with absolute instead of Good-Turing discounts, raw counts at every order). Interpolated KN
is stored in backoff form, which is exact: an unseen n-gram's interpolated probability is the
context's interpolation weight times the lower-order probability.

Count form: ``mle`` (the longest context seen in training, maximum likelihood; zero for unseen
continuations), ``laplace`` (add-1), ``addk`` (add-k, k tuned on valid), ``jm`` (Jelinek-Mercer:
each order interpolated with the one below, down to the uniform distribution, one weight per order
tuned on valid by EM).

All distributions are over the vocabulary without ``<s>`` (``</s>`` and ``<unk>`` included), for
every context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from seqlab.errors import SeqLabError
from seqlab.ngram import discount, spill
from seqlab.ngram.adjust import adjusted_counts
from seqlab.ngram.counts import Table, ranks_ending_at
from seqlab.scoring import Segments

BACKOFF_FORM = ("kn", "mkn", "backoff")
ESTIMATORS = ("mle", "laplace", "addk", "jm", "backoff", "kn", "mkn")


@dataclass
class NGramModel:
    estimator: str
    order: int
    vocab_size: int
    bos: int
    tables: list[Table]
    logp: list[np.ndarray] = field(default_factory=list)  # backoff form: ln p of each n-gram
    logbo: list[np.ndarray] = field(default_factory=list)  # backoff form: ln backoff of each n-gram as a context
    params: dict = field(default_factory=dict)  # tuned k, lambdas, discounts
    cache: dict = field(default_factory=dict, repr=False)  # derived once: context totals

    @property
    def outcomes(self) -> int:
        """Size of the predicted vocabulary: every id but ``<s>``."""
        return self.vocab_size - 1

    def log_probs(self, segments: Segments) -> np.ndarray:
        """Natural-log probability of the token at every position given the tokens before it in its
        segment (at most order-1 of them). The one scoring path for every estimator."""
        ranks = ranks_ending_at(self.tables, segments, self.vocab_size)
        if self.logp:  # backoff form, built here or read from ARPA
            out = _backoff_log_probs(self, ranks, segments)
        else:
            with np.errstate(divide="ignore"):  # MLE: zero probability is -inf, reported by evaluation
                out = np.log(_count_probs(self, ranks, segments))
        spill.forget(*(table.keys for table in self.tables), *(table.counts for table in self.tables), *self.logp, *self.logbo)
        return out

    def next_log_probs(self, ids) -> np.ndarray:
        """ln p(w | ids) for every vocabulary id ``w`` (-inf for ``<s>``), through ``log_probs``: only
        the last order-1 ids matter; ids starting with ``<s>`` are a sequence start."""
        context = list(ids)[-(self.order - 1) :] if self.order > 1 else []
        candidates = np.array([w for w in range(self.vocab_size) if w != self.bos], dtype=np.int64)
        width = len(context) + 1
        tokens = np.empty((len(candidates), width), dtype=np.int64)
        tokens[:, :-1] = context
        tokens[:, -1] = candidates
        segments = Segments(tokens.ravel(), np.tile(np.arange(width), len(candidates)))
        out = np.full(self.vocab_size, -np.inf)
        out[candidates] = self.log_probs(segments)[width - 1 :: width]
        return out


# --- backoff form -----------------------------------------------------------------------------------


def _backoff_log_probs(model: NGramModel, ranks: list[np.ndarray], segments: Segments) -> np.ndarray:
    best_order = np.ones(len(segments.ids), dtype=np.int64)
    best_rank = ranks[0].copy()
    for k in range(2, model.order + 1):
        found = ranks[k - 1] >= 0
        best_order[found] = k
        best_rank[found] = ranks[k - 1][found]
    out = np.empty(len(segments.ids))
    for k in range(1, model.order + 1):
        at = best_order == k
        out[at] = model.logp[k - 1][best_rank[at]]
    for j in range(1, model.order):  # contexts of length j we backed off from
        context = _context_ranks(ranks, segments, j)
        use = (best_order <= j) & (context >= 0)
        out[use] += model.logbo[j - 1][context[use]]
    return out


def _context_ranks(ranks: list[np.ndarray], segments: Segments, j: int) -> np.ndarray:
    """Rank of the j-gram just before each position (its context of length j), or -1."""
    context = np.full(len(segments.ids), -1, dtype=np.int64)
    context[1:] = ranks[j - 1][:-1]
    context[segments.offset < j] = -1
    return context


def uniform_unigrams(vocab_size: int, bos: int, seen: np.ndarray, leftover: float) -> np.ndarray:
    p = seen + leftover / (vocab_size - 1)
    p[bos] = 0.0
    return p


def kneser_ney_unigrams(a: np.ndarray, bos: int, discounts: np.ndarray) -> np.ndarray:
    """Order 1 of (modified) Kneser-Ney from the unigrams' adjusted counts ``a`` (``<s>``'s zero):
    discounted, with what the discounts took spread uniformly."""
    d = discount.apply(a, discounts)
    total = a.sum()
    return uniform_unigrams(len(a), bos, (a - d) / total, d.sum() / total)


CHUNK = 1 << 22  # n-grams an estimation step holds its working arrays for: 4M, about 100 MB of them


def _chunks(table: Table):
    """(rows, prefix ranks) of ``table`` in slices of ``CHUNK`` n-grams, so that what is derived per
    n-gram on the way to its probability is held for one slice at a time, not for the whole order."""
    for start in range(0, len(table), CHUNK):
        rows = slice(start, start + CHUNK)
        yield rows, table.keys[rows] // table.vocab_size


def _kneser_ney(tables: list[Table], bos: int, modified: bool, keep) -> tuple[list, list, dict]:
    """ln p and ln back-off of every order, estimated an order at a time: order k's probabilities need
    order k-1's, which are then final (logged and handed to ``keep``)."""
    choose = discount.modified_kneser_ney if modified else discount.kneser_ney
    adjusted = adjusted_counts(tables, bos)
    adjusted[0] = adjusted[0].copy()
    adjusted[0][bos] = 0
    discounts = [choose(a) for a in adjusted]
    spill.forget(tables[-1].counts)
    probs = kneser_ney_unigrams(adjusted[0], bos, discounts[0])
    logp, logbo = [], []
    for k in range(2, len(tables) + 1):
        table, a = tables[k - 1], adjusted[k - 1]
        adjusted[k - 1] = None  # each order's arrays go once used: the model, not its making, sets the peak
        n_contexts = len(tables[k - 2])
        context_total, discounted = np.zeros(n_contexts), np.zeros(n_contexts)
        for rows, prefix in _chunks(table):  # per context: the adjusted counts and the discounts subtracted
            context_total += np.bincount(prefix, weights=a[rows], minlength=n_contexts)
            discounted += np.bincount(prefix, weights=discount.apply(a[rows], discounts[k - 1]), minlength=n_contexts)
        gamma = np.divide(discounted, context_total, out=discounted, where=context_total > 0)
        gamma[context_total <= 0] = 1.0
        p = np.empty(len(table))
        for rows, prefix in _chunks(table):  # (a - d) / total + gamma * lower
            chunk = np.subtract(a[rows], discount.apply(a[rows], discounts[k - 1]))
            chunk /= context_total[prefix]
            lower = probs[table.suffix[rows]]
            lower *= gamma[prefix]
            chunk += lower
            p[rows] = chunk
        spill.forget(table.keys, table.counts, table.suffix)
        del a, context_total
        logp.append(_logged(probs, keep))
        logbo.append(_logged(gamma, keep))
        probs = p
    logp.append(_logged(probs, keep))
    logbo.append(np.zeros(len(tables[-1])))  # the top order is no context: back-off weights of 1, never read
    return logp, logbo, {"discounts": [list(map(float, x)) for x in discounts]}


def _logged(values: np.ndarray, keep) -> np.ndarray:
    """ln of ``values``, in place (no second copy of the model's numbers), handed to ``keep``."""
    with np.errstate(divide="ignore"):
        return keep(np.log(values, out=values))


def _absolute_backoff(tables: list[Table], bos: int, keep) -> tuple[list, list, dict]:
    counts = [t.counts.astype(np.float64) for t in tables]
    counts[0][bos] = 0
    discounts = [float(discount.kneser_ney(c.astype(np.int64))[0]) for c in counts]
    c, d = counts[0], discounts[0]
    total = c.sum()
    seen = np.maximum(c - d, 0) / total
    probs = [uniform_unigrams(len(c), bos, seen, d * np.count_nonzero(c) / total)]
    backoffs = []
    for k in range(2, len(tables) + 1):
        table, c = tables[k - 1], counts[k - 1]
        n_contexts, prefix = len(tables[k - 2]), table.prefix
        context_total = np.bincount(prefix, weights=c, minlength=n_contexts)
        types = np.bincount(prefix, minlength=n_contexts)
        p = (c - discounts[k - 1]) / context_total[prefix]
        lower_seen = np.bincount(prefix, weights=probs[k - 2][table.suffix], minlength=n_contexts)
        left = np.divide(discounts[k - 1] * types, context_total, out=np.zeros(n_contexts), where=context_total > 0)
        alpha = np.divide(left, 1.0 - lower_seen, out=np.ones(n_contexts), where=context_total > 0)
        probs.append(p)
        backoffs.append(alpha)
    logp = [_logged(p, keep) for p in probs]
    logbo = [_logged(b, keep) for b in backoffs] + [np.zeros(len(tables[-1]))]
    return logp, logbo, {"discounts": discounts}


# --- count form ---------------------------------------------------------------------------------------


def _context_totals(model: NGramModel) -> list[np.ndarray]:
    """``totals[0]``: unigram counts without ``<s>``; ``totals[j][r]`` (j >= 1): how often the j-gram of
    rank r was followed by a token. Computed once per model."""
    if "totals" not in model.cache:
        unigrams = model.tables[0].counts.astype(np.float64)
        unigrams[model.bos] = 0
        totals = [unigrams]
        for k in range(2, model.order + 1):
            table = model.tables[k - 1]
            totals.append(np.bincount(table.prefix, weights=table.counts, minlength=len(model.tables[k - 2])))
        model.cache["totals"] = totals
    return model.cache["totals"]


def _ml_components(model: NGramModel, ranks, segments) -> tuple[np.ndarray, np.ndarray]:
    """Per order j+1 (rows 0..N-1): the count of the n-gram at each position and its context total."""
    n = len(segments.ids)
    totals = _context_totals(model)
    count = np.zeros((model.order, n))
    total = np.zeros((model.order, n))
    count[0] = totals[0][segments.ids]
    total[0] = totals[0].sum()
    for j in range(1, model.order):
        context = _context_ranks(ranks, segments, j)
        ok = context >= 0
        total[j, ok] = totals[j][context[ok]]
        gram = ranks[j]
        count[j, gram >= 0] = model.tables[j].counts[gram[gram >= 0]]
    return count, total


def _count_probs(model: NGramModel, ranks, segments) -> np.ndarray:
    count, total = _ml_components(model, ranks, segments)
    v = model.outcomes
    longest = np.minimum(segments.offset, model.order - 1)  # longest context length available
    if model.estimator == "mle":
        usable = longest.copy()
        for j in range(model.order - 1, -1, -1):
            unseen = (usable == j) & (total[j] == 0) & (j > 0)
            usable[unseen] = j - 1
        pick = np.arange(len(usable))
        return np.divide(count[usable, pick], total[usable, pick], out=np.zeros(len(usable)), where=total[usable, pick] > 0)
    if model.estimator in ("laplace", "addk"):
        k = model.params["k"]
        pick = np.arange(len(longest))
        return (count[longest, pick] + k) / (total[longest, pick] + k * v)
    if model.estimator == "jm":
        lambdas = model.params["lambdas"]
        p = np.full(len(longest), 1.0 / v)
        for j in range(model.order):
            use = (j <= longest) & (total[j] > 0)
            ml = np.divide(count[j], total[j], out=np.zeros_like(p), where=total[j] > 0)
            p = np.where(use, lambdas[j] * ml + (1 - lambdas[j]) * p, p)
        return p
    raise SeqLabError(f"unknown estimator {model.estimator!r}")


# --- tuning on valid ----------------------------------------------------------------------------------


def _golden_section(f, lo: float, hi: float, steps: int = 40) -> float:
    ratio = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(steps):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return (a + b) / 2


def _tune_k(model: NGramModel, valid: Segments, scored: np.ndarray) -> float:
    ranks = ranks_ending_at(model.tables, valid, model.vocab_size)

    def nll(log10_k: float) -> float:
        model.params["k"] = 10.0**log10_k
        return -np.log(_count_probs(model, ranks, valid)[scored]).mean()

    best = _golden_section(nll, -5.0, 1.0)
    return float(10.0**best)


def _tune_lambdas(model: NGramModel, valid: Segments, scored: np.ndarray, iterations: int = 30) -> list[float]:
    """EM for the nested interpolation weights: which order 'generated' each valid token."""
    ranks = ranks_ending_at(model.tables, valid, model.vocab_size)
    count, total = _ml_components(model, ranks, valid)
    count, total, offset = count[:, scored], total[:, scored], valid.offset[scored]
    available = (total > 0) & (np.arange(model.order)[:, None] <= np.minimum(offset, model.order - 1)[None, :])
    ml = np.divide(count, total, out=np.zeros_like(count), where=total > 0)
    lambdas = np.full(model.order, 0.5)
    uniform = 1.0 / model.outcomes
    for _ in range(iterations):
        # weight of each order in the mixture the nesting implies, per token
        weight = np.zeros((model.order + 1, count.shape[1]))
        rest = np.ones(count.shape[1])
        for j in range(model.order - 1, -1, -1):
            lam = np.where(available[j], lambdas[j], 0.0)
            weight[j + 1] = rest * lam * ml[j]
            rest = rest * (1 - lam)
        weight[0] = rest * uniform
        posterior = weight / weight.sum(axis=0, keepdims=True)
        reached = np.cumsum(posterior, axis=0)  # generated at this order or below
        for j in range(model.order):
            at = available[j]
            denominator = reached[j + 1, at].sum()
            if denominator > 0:
                lambdas[j] = float(np.clip(posterior[j + 1, at].sum() / denominator, 1e-6, 1 - 1e-6))
    return [float(x) for x in lambdas]


# --- building -----------------------------------------------------------------------------------------


def estimate(
    estimator: str,
    tables: list[Table],
    vocab_size: int,
    bos: int,
    valid: Segments | None = None,
    k: float | None = None,
    lambdas: list[float] | None = None,
) -> NGramModel:
    """Build an ``estimator`` model from count tables; ``valid`` tunes add-k's k and JM's weights
    unless they are given."""
    if estimator not in ESTIMATORS:
        raise SeqLabError(f"unknown estimator {estimator!r}; expected one of {', '.join(ESTIMATORS)}")
    model = NGramModel(estimator, len(tables), int(vocab_size), int(bos), tables)
    keep = spill.like(tables[-1].keys)  # spilled counts: the probabilities go where they went
    if estimator in ("kn", "mkn"):
        model.logp, model.logbo, model.params = _kneser_ney(tables, bos, estimator == "mkn", keep)
        return model
    if estimator == "backoff":
        model.logp, model.logbo, model.params = _absolute_backoff(tables, bos, keep)
        return model
    needs_valid = (estimator == "jm" and lambdas is None) or (estimator == "addk" and k is None)
    if needs_valid and valid is None:
        raise SeqLabError(f"estimator {estimator!r} tunes on the valid split; none was given")
    scored = None if valid is None else valid.ids != bos
    if estimator == "laplace":
        model.params = {"k": 1.0}
    elif estimator == "addk":
        if k is not None and k <= 0:
            raise SeqLabError(f"add-k needs k > 0 (got {k})")
        model.params = {"k": float(k) if k is not None else _tune_k(model, valid, scored)}
    elif estimator == "jm":
        model.params = {"lambdas": list(lambdas) if lambdas is not None else _tune_lambdas(model, valid, scored)}
    return model
