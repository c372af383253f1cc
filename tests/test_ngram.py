import kenlm
import numpy as np
import pytest

from seqlab.errors import SeqLabError
from seqlab.ngram import BACKOFF_FORM, ESTIMATORS, Segments, count, estimate
from seqlab.ngram import discount
from seqlab.ngram.arpa import write_arpa
from seqlab.vocab import BOS, EOS, build_vocab

TRAIN = [
    line.split()
    for line in ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat is red",
                 "a red dog sat", "on the mat the cat"] * 3
]
VALID = [line.split() for line in ["the cat sat", "the dog ran on a mat", "a bird", "red red red"]]
VOCAB = build_vocab(TRAIN)
V, B, E = len(VOCAB), VOCAB.index[BOS], VOCAB.index[EOS]


def segments(sentences):
    return Segments.from_sentences([VOCAB.encode(s) for s in sentences], B, E)


def build(estimator, order):
    return estimate(estimator, count(segments(TRAIN), order, V), V, B, valid=segments(VALID))


def test_counts_of_a_tiny_corpus():
    tables = count(Segments.from_sentences([[3, 4, 3], [3]], bos=1, eos=2), 3, 5)
    assert tables[0].counts.tolist() == [0, 2, 2, 3, 1]  # <s>, </s> twice, 'a' (3) three times, 'b' once
    bigrams = {(int(p), int(w)): int(c) for p, w, c in zip(tables[1].prefix, tables[1].word, tables[1].counts)}
    assert bigrams == {(1, 3): 2, (3, 4): 1, (4, 3): 1, (3, 2): 2}
    assert len(tables[2]) == 4  # <s> a b, a b a, b a </s>, <s> a </s>; nothing crosses a sentence


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_every_distribution_sums_to_one(estimator, order):
    model = build(estimator, order)
    outcomes = [w for w in range(V) if w != B]
    for sentence in [VOCAB.encode(s) for s in VALID]:
        padded = [B] + sentence + [E]
        for t in range(1, len(padded)):
            context = padded[max(0, t - order + 1) : t]
            queries = Segments(
                np.array([tok for w in outcomes for tok in context + [w]], dtype=np.int64),
                np.repeat(np.arange(len(outcomes)), len(context) + 1),
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


@pytest.mark.parametrize("order", [2, 3, 4, 5])
@pytest.mark.parametrize("estimator", BACKOFF_FORM)
def test_kenlm_scores_our_arpa_like_we_do(tmp_path, estimator, order):
    model = build(estimator, order)
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
