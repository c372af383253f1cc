import json
import os
import re

import kenlm

import numpy as np
import pytest

from seqlab.errors import SeqLabError
from seqlab.ngram import BACKOFF_FORM, ESTIMATORS, Segments, count, estimate, prune
from seqlab.ngram import discount
from seqlab.ngram.arpa import read_arpa, write_arpa
from seqlab.ngram.model_file import load_model, save_model
from seqlab.vocab import BOS, EOS, build_vocab

from helpers import SENTENCES

TRAIN = [line.split() for line in SENTENCES * 3]
VALID = [line.split() for line in ["the cat sat", "the dog ran on a mat", "a bird", "red red red"]]
VOCAB = build_vocab(TRAIN)
V, B, E = len(VOCAB), VOCAB.index[BOS], VOCAB.index[EOS]


def segments(sentences):
    return Segments.from_sentences([VOCAB.encode(s) for s in sentences], B, E)


def build(estimator, order, cutoffs=()):
    tables = prune(count(segments(TRAIN), order, V), list(cutoffs), V)
    return estimate(estimator, tables, V, B, valid=segments(VALID))


def test_counts_of_a_tiny_corpus():
    tables = count(Segments.from_sentences([[3, 4, 3], [3]], bos=1, eos=2), 3, 5)
    assert tables[0].counts.tolist() == [0, 2, 2, 3, 1]  # <s>, </s> twice, 'a' (3) three times, 'b' once
    bigrams = {(int(p), int(w)): int(c) for p, w, c in zip(tables[1].prefix, tables[1].word, tables[1].counts)}
    assert bigrams == {(1, 3): 2, (3, 4): 1, (4, 3): 1, (3, 2): 2}
    assert len(tables[2]) == 4  # <s> a b, a b a, b a </s>, <s> a </s>; nothing crosses a sentence


@pytest.mark.parametrize("cutoffs", [(), (0, 1, 2), (0, 0, 1)], ids=["all", "pruned", "pruned-above-bigrams"])
@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_distribution_sums_to_one(estimator, order, cutoffs):
    model = build(estimator, order, cutoffs)
    outcomes = [w for w in range(V) if w != B]
    for sentence in [VOCAB.encode(s) for s in VALID]:
        padded = [B] + sentence + [E]
        for t in range(1, len(padded)):
            context = padded[max(0, t - order + 1) : t]
            queries = Segments(
                np.array([tok for w in outcomes for tok in context + [w]], dtype=np.int64),
                np.tile(np.arange(len(context) + 1), len(outcomes)),
            )
            with np.errstate(divide="ignore"):
                probs = np.exp(model.log_probs(queries)[len(context) :: len(context) + 1])
            assert abs(probs.sum() - 1) < 1e-9, (estimator, order, context)


def test_mle_gives_infinite_perplexity_on_unseen_events():
    model = build("mle", 3)
    with np.errstate(divide="ignore"):
        scores = model.log_probs(segments([["red", "cat", "the"]]))
    assert np.isneginf(scores[1:]).any()


def test_tuned_parameters():
    assert 0 < build("addk", 3).params["k"] < 10
    lambdas = build("jm", 3).params["lambdas"]
    assert len(lambdas) == 3 and all(0 < x < 1 for x in lambdas)
    assert build("laplace", 2).params["k"] == 1.0


def test_bad_estimator_arguments():
    tables = count(segments(TRAIN), 2, V)
    with pytest.raises(SeqLabError, match="unknown estimator 'witten-bell'"):
        estimate("witten-bell", tables, V, B)
    with pytest.raises(SeqLabError, match=r"add-k needs k > 0 \(got 0\)"):
        estimate("addk", tables, V, B, k=0)


def test_discounts_from_counts_of_counts():
    counts = np.array([1] * 10 + [2] * 5 + [3] * 3 + [4] * 2)
    y = 10 / (10 + 2 * 5)
    assert discount.kneser_ney(counts) == pytest.approx([y] * 3)
    assert discount.modified_kneser_ney(counts) == pytest.approx([1 - 2 * y * 5 / 10, 2 - 3 * y * 3 / 5, 3 - 4 * y * 2 / 3])
    assert discount.modified_kneser_ney(np.array([1, 1, 2])).tolist() == [0.5, 1.0, 1.5]  # no n3, n4: fallback


@pytest.mark.parametrize("cutoffs", [(), (0, 1, 2)], ids=["all", "pruned"])
@pytest.mark.parametrize("order", [2, 3, 4, 5])
@pytest.mark.parametrize("estimator", BACKOFF_FORM)
def test_kenlm_scores_our_arpa_like_we_do(tmp_path, estimator, order, cutoffs):
    model = build(estimator, order, cutoffs)
    path = tmp_path / "model.arpa"
    write_arpa(model, list(VOCAB.tokens), path)
    loaded = kenlm.Model(str(path))
    test = VALID + [["zebra", "the", "cat"], ["a"]]
    ours = model.log_probs(segments(test)) / np.log(10)
    start = 0
    for sentence in test:
        length = len(sentence) + 2
        mine = ours[start + 1 : start + length].sum()  # every token and </s>, not <s>
        assert loaded.score(" ".join(sentence), bos=True, eos=True) == pytest.approx(mine, abs=1e-4)
        start += length


@pytest.mark.parametrize("estimator", BACKOFF_FORM)
def test_arpa_round_trip_scores_identically(tmp_path, estimator):
    model = build(estimator, 3)
    write_arpa(model, list(VOCAB.tokens), tmp_path / "m.arpa")
    loaded = read_arpa(tmp_path / "m.arpa", VOCAB.index, B)
    test = segments(VALID + [["zebra", "cat"]])
    np.testing.assert_allclose(loaded.log_probs(test), model.log_probs(test), rtol=0, atol=1e-7)


@pytest.mark.parametrize("cut", ["by prefix", "within a prefix"])
def test_counting_in_parts_within_a_memory_budget_gives_the_same_tables(monkeypatch, cut):
    """Each order counted in parts of the key space that fit the budget: whole prefixes (a budget of the
    most frequent word's windows), or a frequent prefix split by its next word (a budget of the most
    frequent n-gram's windows). The same tables, array for array, and so the same model."""
    from seqlab.ngram import counts

    rng = np.random.default_rng(0)
    sentences = [list(np.where(rng.random(n) < 0.4, 3, rng.integers(4, 40, size=n))) for n in rng.integers(1, 30, size=300)]
    corpus = Segments.from_sentences(sentences, 1, 2)
    whole = count(corpus, 5, 40)
    most = int(np.bincount(corpus.ids).max()) if cut == "by prefix" else max(int(t.counts.max()) for t in whole[1:])
    split = []
    parts = counts._parts
    monkeypatch.setattr(counts, "_parts", lambda *a: split.append(parts(*a)) or split[-1])
    budgeted = count(corpus, 5, 40, memory=most * counts.BYTES_PER_POSITION, threads=1)
    assert all(len(p) > 1 for p in split)  # every order in several parts
    within = any(low % 40 or high % 40 for p in split for low, high in p)
    assert within == (cut == "within a prefix")
    for a, b in zip(whole, budgeted):
        for name in ("keys", "counts", "suffix", "first"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    test = Segments.from_sentences(sentences[:20], 1, 2)
    np.testing.assert_array_equal(estimate("mkn", budgeted, 40, 1).log_probs(test), estimate("mkn", whole, 40, 1).log_probs(test))


@pytest.mark.parametrize("memory", [None, 3_000 * 64])
def test_parts_counted_on_several_threads_give_the_same_tables(monkeypatch, memory):
    """Parts of each order sorted on three threads at once, with and without a budget, give the tables
    of one part on one thread; so does a corpus whose one n-gram holds most windows (a part of its own,
    larger than a thread's share)."""
    from seqlab.ngram import counts

    monkeypatch.setattr(counts, "PARALLEL_WINDOWS", 100)
    rng = np.random.default_rng(1)
    varied = [list(rng.integers(3, 40, size=n)) for n in rng.integers(1, 30, size=300)]
    repeated = [[3] * 25 for _ in range(100)] + varied[:20]  # "3 3" is most of the windows of every order
    for sentences in (varied, repeated):
        corpus = Segments.from_sentences(sentences, 1, 2)
        split = []
        parts = counts._parts
        monkeypatch.setattr(counts, "_parts", lambda *a: split.append(parts(*a)) or split[-1])
        threaded = count(corpus, 5, 40, memory, threads=3)
        monkeypatch.setattr(counts, "_parts", parts)
        assert all(len(p) > 1 for p in split)
        for a, b in zip(count(corpus, 5, 40, threads=1), threaded):
            for name in ("keys", "counts", "suffix", "first"):
                np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


def test_a_model_past_its_budget_is_spilled_to_disk_and_is_the_same_model(tmp_path):
    """A budget below the model's bound (but enough for counting in one part) spills each order's table
    and the estimate's numbers to files that are unlinked once mapped: the same arrays, the same ARPA,
    nothing left on disk."""
    from seqlab.ngram import spill
    from seqlab.ngram.counts import model_bytes

    corpus = segments(TRAIN)
    whole = count(corpus, 4, V)
    spilled = count(corpus, 4, V, memory=model_bytes(len(corpus.ids), 4, V) - 1, spill_to=tmp_path)
    assert spill.folder_of(whole[-1].keys) is None
    for a, b in zip(whole[1:], spilled[1:], strict=True):
        assert spill.folder_of(b.keys) == tmp_path and not b.keys.flags.writeable
        for name in ("keys", "counts", "suffix", "first"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for estimator in BACKOFF_FORM:
        ours, reference = estimate(estimator, spilled, V, B), estimate(estimator, whole, V, B)
        assert all(spill.folder_of(logp) == tmp_path for logp in ours.logp)
        for a, b in zip(reference.logp + reference.logbo, ours.logp + ours.logbo, strict=True):
            np.testing.assert_array_equal(a, b)
        write_arpa(ours, list(VOCAB.tokens), tmp_path / "spilled.arpa")
        write_arpa(reference, list(VOCAB.tokens), tmp_path / "whole.arpa")
        assert (tmp_path / "spilled.arpa").read_bytes() == (tmp_path / "whole.arpa").read_bytes()
    for a, b in zip(prune(whole, [0, 0, 1], V)[1:], prune(spilled, [0, 0, 1], V)[1:], strict=True):  # pruned: spilled too
        assert spill.folder_of(b.keys) == tmp_path and spill.folder_of(b.extended) in (tmp_path, None)
        for name in ("keys", "counts", "suffix", "first", "extended"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    spill.forget(*ours.logp, *(t.keys for t in ours.tables))  # pages dropped, values read back from the file
    np.testing.assert_array_equal(ours.logp[-1], reference.logp[-1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["spilled.arpa", "whole.arpa"]


def test_no_room_to_spill_is_one_line(tmp_path):
    from seqlab.ngram import spill

    with pytest.raises(SeqLabError, match=rf"^{re.escape(str(tmp_path / 'gone'))}: cannot spill n-gram tables there "):
        spill.put(np.arange(3), tmp_path / "gone")


@pytest.mark.parametrize("estimator", ["kn", "mkn"])
def test_kneser_ney_estimated_in_slices_is_the_same_model(monkeypatch, estimator):
    """Each order's probabilities computed a slice of n-grams at a time (context sums added up over
    slices): the model of one slice, to the rounding of those sums."""
    import importlib

    module = importlib.import_module("seqlab.ngram.estimate")  # the module, not the function of that name
    rng = np.random.default_rng(1)
    sentences = [list(np.where(rng.random(n) < 0.3, 3, rng.integers(4, 40, size=n))) for n in rng.integers(1, 30, size=300)]
    tables = count(Segments.from_sentences(sentences, 1, 2), 4, 40)
    whole = estimate(estimator, tables, 40, 1)
    monkeypatch.setattr(module, "CHUNK", 7)  # slices that cut through contexts
    sliced = estimate(estimator, tables, 40, 1)
    assert max(map(len, tables)) > 50 * module.CHUNK
    for a, b in zip(whole.logp + whole.logbo, sliced.logp + sliced.logbo, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-13, atol=0)


def test_a_table_from_rows_of_words_looked_up_a_slice_at_a_time_is_the_counted_table(monkeypatch):
    """A table rebuilt from its n-grams' words in any row order (the Ray engine's read-back, a saved
    model's load), its prefixes and suffixes looked up a few rows at a time: the counted table."""
    from seqlab.ngram import counts as module
    from seqlab.ngram.counts import table_from_words, unigram_table

    rng = np.random.default_rng(2)
    sentences = [list(rng.integers(3, 30, size=n)) for n in rng.integers(1, 25, size=200)]
    tables = count(Segments.from_sentences(sentences, 1, 2), 4, 30)
    monkeypatch.setattr(module, "LOOKUP_ROWS", 5)
    rebuilt = [unigram_table(tables[0].counts)]
    for table in tables[1:]:
        words = _words(tables, table.order)
        shuffle = rng.permutation(len(words))
        built, order = table_from_words(words[shuffle].astype(np.int32), table.counts[shuffle], rebuilt, 30)
        assert len(words) > 20 * module.LOOKUP_ROWS
        for column in ("keys", "counts", "suffix", "first"):
            np.testing.assert_array_equal(getattr(built, column), getattr(table, column))
        np.testing.assert_array_equal(shuffle[order], np.arange(len(table)))
        rebuilt.append(built)


def _words(tables, order):
    """The words of every n-gram of ``order``, one row each, first to last, in table order."""
    rank, columns = np.arange(len(tables[order - 1])), []
    for table in tables[order - 1:0:-1]:
        columns.append(table.word[rank])
        rank = table.prefix[rank]
    return np.stack([rank, *columns[::-1]], axis=1)  # order 1: a word's rank is its id


@pytest.mark.parametrize("order", [1, 3, 5])
def test_a_models_memory_is_bounded_before_it_is_counted(order):
    from seqlab.ngram.counts import MODEL_BYTES_PER_NGRAM, model_bytes

    corpus = segments(TRAIN)
    model = estimate("mkn", count(corpus, order, V), V, B)
    held = sum(t.keys.nbytes + t.counts.nbytes + t.suffix.nbytes + t.first.nbytes for t in model.tables)
    held += sum(a.nbytes for a in model.logp + model.logbo)
    assert held <= model_bytes(len(corpus.ids), order, V) and sum(map(len, model.tables)) * MODEL_BYTES_PER_NGRAM >= held


def test_a_budget_too_small_for_one_n_gram_is_one_line():
    from seqlab.ngram import counts

    with pytest.raises(SeqLabError, match=r"^ngram.memory: 64 bytes cannot hold the \d+ windows of one order-2 n-gram "
                                          r"\(at least [\d,]+ bytes\); give counting more memory$"):
        count(segments(TRAIN), 3, V, memory=counts.BYTES_PER_POSITION)


@pytest.mark.parametrize("estimator", BACKOFF_FORM)
def test_arpa_written_in_slices_and_threads_is_the_same_file(tmp_path, estimator):
    model = build(estimator, 4)
    write_arpa(model, list(VOCAB.tokens), tmp_path / "whole.arpa", threads=1)
    write_arpa(model, list(VOCAB.tokens), tmp_path / "slices.arpa", rows=3, threads=3)  # many slices in flight
    assert (tmp_path / "slices.arpa").read_text() == (tmp_path / "whole.arpa").read_text()
    lines = (tmp_path / "whole.arpa").read_text().splitlines()
    assert "-99\t<s>\t" in "\n".join(lines) and sum(line.count("\t") == 1 for line in lines) == len(model.tables[-1])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda text: text[: len(text) // 2], "truncated or malformed: header promises"),
        (lambda text: text.replace("\\end\\", ""), "truncated: no \\end\\ marker"),
        (lambda text: text.replace("\t<unk>\t", "\tzzz\t", 1), "word 'zzz' is not in the vocabulary"),
        (lambda text: text.replace("\\data\\", "").replace("ngram 1=", "nonsense 1="), "unexpected text before"),
        (lambda text: "hello\n", "unexpected text before \\data\\"),
        # the header counts order 1 only, the body has 2 and 3: never read as a unigram model
        (lambda text: re.sub(r"ngram [23]=\d+\n", "", text), "a \\2-grams: section the header does not count"),
        (lambda text: "\\data\\\nngram 1=0\n\n\\end\\\n", "the header must count the 1-grams (at least one)"),
        (lambda text: re.sub(r"(\\1-grams:\n)[^\t]+", r"\1nan", text), "log10 probability nan is not the log of a probability"),
        (lambda text: re.sub(r"(\\2-grams:\n)[^\t]+", r"\g<1>0.5", text), "log10 probability 0.5 is not the log of a probability"),
        (lambda text: re.sub(r"(\\1-grams:\n[^\t]+\t[^\t]+\t)[^\n]+", r"\1inf", text), "back-off weight inf is not finite"),
    ],
)
def test_damaged_arpa_is_refused_in_one_line(tmp_path, damage, message):
    path = tmp_path / "m.arpa"
    write_arpa(build("mkn", 3), list(VOCAB.tokens), path)
    path.write_text(damage(path.read_text()))
    with pytest.raises(SeqLabError) as info:
        read_arpa(path, VOCAB.index, B)
    assert message in str(info.value) and str(path) in str(info.value)


def test_model_file_round_trip_and_vocabulary_check(tmp_path):
    for estimator in ESTIMATORS:
        model = build(estimator, 3)
        save_model(model, tmp_path / "m.npz", VOCAB.sha256)
        loaded = load_model(tmp_path / "m.npz", VOCAB.sha256)
        np.testing.assert_array_equal(loaded.log_probs(segments(VALID)), model.log_probs(segments(VALID)))
    with pytest.raises(SeqLabError, match="built for vocabulary"):
        load_model(tmp_path / "m.npz", "0" * 64)
    (tmp_path / "m.npz").write_bytes((tmp_path / "m.npz").read_bytes()[:100])
    with pytest.raises(SeqLabError, match="not a readable SeqLab n-gram model"):
        load_model(tmp_path / "m.npz")


def test_pruning_drops_rare_ngrams_and_keeps_tables_consistent():
    full, pruned = count(segments(TRAIN), 3, V), prune(count(segments(TRAIN), 3, V), [0, 1, 3], V)
    assert len(pruned[1]) == (full[1].counts > 1).sum() and len(pruned[2]) == (full[2].counts > 3).sum()
    assert (np.diff(pruned[2].keys) > 0).all()
    # every kept trigram's prefix and suffix are kept bigrams holding the same words
    bigrams, trigrams = pruned[1], pruned[2]
    assert (bigrams.prefix[trigrams.prefix] == trigrams.first).all()  # order-1 rank is the word id
    second = bigrams.word[trigrams.prefix]
    assert (bigrams.prefix[trigrams.suffix] == second).all() and (bigrams.word[trigrams.suffix] == trigrams.word).all()


def test_char_ngrams_sum_to_one_and_match_kenlm(tmp_path):
    from seqlab.tokenize import CharTokenizer

    tokenizer = CharTokenizer()
    train = [tokenizer.tokenize(" ".join(s)) for s in TRAIN]
    vocab = build_vocab(train)
    bos, eos = vocab.index[BOS], vocab.index[EOS]
    seg = lambda lines: Segments.from_sentences([vocab.encode(s) for s in lines], bos, eos)  # noqa: E731
    test = [tokenizer.tokenize("the cat sat on a red mat"), tokenizer.tokenize("xyz")]
    model = estimate("mkn", count(seg(train), 5, len(vocab)), len(vocab), bos)
    write_arpa(model, list(vocab.tokens), tmp_path / "char.arpa")
    ours = model.log_probs(seg(test)) / np.log(10)
    loaded, start = kenlm.Model(str(tmp_path / "char.arpa")), 0
    for line in test:
        assert loaded.score(" ".join(line), bos=True, eos=True) == pytest.approx(ours[start + 1 : start + len(line) + 2].sum(), abs=1e-4)
        start += len(line) + 2
    next_probs = np.exp(model.next_log_probs([bos, *vocab.encode(list("the c"))]))
    assert next_probs.sum() == pytest.approx(1.0, abs=1e-9) and next_probs[bos] == 0


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_a_model_file_holding_pickled_objects_is_refused_unrun(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "evil.npz", meta=np.array(json.dumps({"format": "x"})), counts_1=np.array([Boom()], dtype=object))
    with pytest.raises(SeqLabError, match="not a readable SeqLab n-gram model"):
        load_model(tmp_path / "evil.npz")
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("estimator", ["kn", "mkn"])
def test_cutoffs_leave_no_context_without_mass(estimator):
    """"c a b" and "d a b": both trigrams ending in "a b" are seen once and cut by [0, 0, 1]. The bigram
    keeps its continuation count over every counted trigram (2, as KenLM adjusts counts before
    pruning), so the context "a", whose only bigram it is, still has mass: no probability is NaN."""
    train = Segments.from_sentences([[5, 3, 4], [6, 3, 4]], bos=1, eos=2)  # 3 a, 4 b, 5 c, 6 d
    tables = count(train, 3, 7)
    pruned = prune(tables, [0, 0, 1], 7)
    assert np.array_equal(pruned[1].extended, np.bincount(tables[2].suffix, minlength=len(tables[1])))
    model = estimate(estimator, pruned, 7, 1)
    assert not any(np.isnan(p).any() for p in model.logp)
    with np.errstate(divide="ignore"):
        probs = np.exp(model.next_log_probs([3]))  # after "a"
    assert abs(probs.sum() - 1) < 1e-12 and probs[4] > 0.5
