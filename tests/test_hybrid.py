"""The hybrid: interpolation sums to 1, EM finds the best weight, and hybrid.json guards its parts."""

import json

import numpy as np
import pytest

from seqlab.errors import SeqLabError
from seqlab.loading import open_model
from seqlab.scoring import eval_set, score
from seqlab.hybrid import Interpolated, best_mix, fit_weights, load_spec, mix, spec, weight_curve
from seqlab.ngram import count, estimate
from seqlab.ngram.counts import Segments
from seqlab.ngram.model_file import save_model
from seqlab.vocab import BOS, EOS, build_vocab

from helpers import SENTENCES

TRAIN = [line.split() for line in [*SENTENCES[:3], SENTENCES[5]] * 3]
VALID = [line.split() for line in ["the cat sat on a log", "a dog and the cat", "the mat"]]
VOCAB = build_vocab(TRAIN)


def ngram(estimator, order):
    segments = Segments.from_sentences([VOCAB.encode(s) for s in TRAIN], VOCAB.index[BOS], VOCAB.index[EOS])
    return estimate(estimator, count(segments, order, len(VOCAB)), len(VOCAB), VOCAB.index[BOS])


def test_a_mix_of_distributions_is_a_distribution():
    rng = np.random.default_rng(0)
    p, q = rng.dirichlet(np.ones(50)), rng.dirichlet(np.ones(50))
    for weight in (0.0, 0.3, 1.0):
        mixed = np.exp(mix([np.log(p), np.log(q)], [weight, 1 - weight]))
        assert mixed.sum() == pytest.approx(1.0, abs=1e-12)
        assert mixed == pytest.approx(weight * p + (1 - weight) * q, rel=1e-12)


def test_the_weight_of_two_models_is_the_one_a_fine_grid_finds():
    rng = np.random.default_rng(1)
    a, b = np.log(rng.uniform(0.01, 0.5, 2000)), np.log(rng.uniform(0.01, 0.5, 2000))
    weights, iterations = fit_weights([a, b])
    grid, ppl = weight_curve([a, b], points=10001)
    assert weights.sum() == pytest.approx(1.0) and iterations > 1
    assert weights[0] == pytest.approx(grid[ppl.argmin()], abs=2e-4)
    fitted = np.exp(-mix([a, b], weights).mean())
    assert fitted <= ppl.min() * (1 + 1e-9)


def test_two_alike_models_get_the_optimum_near_an_end_where_em_stalls():
    rng = np.random.default_rng(3)
    ngram = np.log(rng.dirichlet(np.ones(40), 20000).max(axis=1))
    neural = ngram + rng.normal(-0.004, 0.06, 20000)  # a little worse, and noisy: the optimum is near 0
    weights, _ = fit_weights([neural, ngram])
    grid, ppl = weight_curve([neural, ngram], points=20001)
    fitted = np.exp(-mix([neural, ngram], weights).mean())
    assert fitted <= ppl.min() * (1 + 1e-12) and fitted <= np.exp(-ngram.mean())
    assert weights[0] == pytest.approx(grid[ppl.argmin()], abs=1e-4)
    em = np.full(2, 0.5)
    for _ in range(500):  # the general method from the same start: far from there after 500 steps
        joint = np.stack([neural, ngram]) + np.log(em)[:, None]
        em = np.exp(joint - np.logaddexp.reduce(joint, axis=0)).mean(axis=1)
    assert np.exp(-mix([neural, ngram], em).mean()) > fitted * (1 + 1e-6)


def test_more_than_two_models_get_em_weights_no_worse_than_an_even_mix():
    rng = np.random.default_rng(4)
    parts = [np.log(rng.uniform(0.01, 0.5, 3000)) for _ in range(3)]
    weights, iterations = fit_weights(parts)
    assert weights.sum() == pytest.approx(1.0) and iterations > 1
    assert -mix(parts, weights).mean() <= -mix(parts, np.full(3, 1 / 3)).mean()


def test_all_weight_goes_to_a_model_that_is_always_better():
    a = np.log(np.full(500, 0.4))
    weights, _ = fit_weights([a, a - 2.0])
    assert weights[0] > 0.999


def test_the_best_mix_is_the_candidate_whose_fitted_mix_is_best_not_the_best_candidate_alone():
    rng = np.random.default_rng(2)
    p = rng.uniform(0.05, 0.3, 4000)
    neural = np.log(p)
    alone_better = np.log(p * 0.98)  # a little worse than the neural model everywhere: adds nothing to it
    complementary = np.log(np.where(np.arange(4000) % 2 == 0, p * 3, p * 0.2))  # worse alone, better on half
    assert -alone_better.mean() < -complementary.mean()
    chosen, weights, iterations, candidates = best_mix(neural, {"a": alone_better, "b": complementary})
    assert chosen == "b" and iterations >= 1 and weights.sum() == pytest.approx(1.0)
    assert candidates["b"] == pytest.approx(-mix([neural, complementary], weights).mean())
    assert candidates["a"] == pytest.approx(-neural.mean(), abs=1e-4) and candidates["b"] < candidates["a"]
    assert candidates["b"] == pytest.approx(min(-mix([neural, complementary], [w, 1 - w]).mean() for w in np.linspace(0, 1, 2001)), abs=1e-6)


def test_bad_weights_are_refused():
    with pytest.raises(SeqLabError, match="non-negative and sum to 1"):
        Interpolated([ngram("mkn", 2), ngram("laplace", 1)], [0.7, 0.7])


def test_a_hybrid_file_scores_and_predicts_like_its_parts_mixed(tmp_path):
    parts = {"mkn-2": ngram("mkn", 2), "laplace-1": ngram("laplace", 1)}
    files = []
    for name, model in parts.items():
        save_model(model, tmp_path / f"{name}.npz", VOCAB.sha256)
        files.append((name, tmp_path / f"{name}.npz"))
    valid = eval_set(VALID, VOCAB, 100)
    log_probs = [m.log_probs(valid.segments)[valid.scored] for m in parts.values()]
    weights, iterations = fit_weights(log_probs)
    (tmp_path / "hybrid.json").write_text(json.dumps(spec(files, weights, iterations)))

    hybrid = open_model(tmp_path / "hybrid.json", VOCAB)
    scores = score(hybrid, valid)
    assert scores.ppl <= min(score(m, valid).ppl for m in parts.values())
    assert scores.nll_nats == pytest.approx(-mix(log_probs, weights).sum(), rel=1e-12)
    for context in (["the"], ["a", "cat"], []):
        ids = [VOCAB.index[BOS], *VOCAB.encode(context)]
        predicted = hybrid.next_log_probs(ids)
        assert np.exp(predicted).sum() == pytest.approx(1.0, abs=1e-9)
        for token in ("cat", "mat", "</s>"):  # what the scoring path gives the token after the context
            segments = Segments.from_sentences([[*ids, VOCAB.index[token]]], None, None)
            assert predicted[VOCAB.index[token]] == pytest.approx(hybrid.log_probs(segments)[-1], abs=1e-12)


def test_a_changed_or_missing_part_is_refused(tmp_path):
    save_model(ngram("mkn", 2), tmp_path / "a.npz", VOCAB.sha256)
    save_model(ngram("laplace", 1), tmp_path / "b.npz", VOCAB.sha256)
    (tmp_path / "hybrid.json").write_text(json.dumps(spec([("a", tmp_path / "a.npz"), ("b", tmp_path / "b.npz")], [0.5, 0.5], 1)))
    save_model(ngram("kn", 2), tmp_path / "a.npz", VOCAB.sha256)
    with pytest.raises(SeqLabError, match=r"a.npz has changed since the weights were fitted; rerun `dvc repro hybrid`"):
        load_spec(tmp_path / "hybrid.json")
    (tmp_path / "hybrid.json").write_text(json.dumps(spec([("a", tmp_path / "a.npz"), ("b", tmp_path / "b.npz")], [0.5, 0.5], 1)))
    (tmp_path / "b.npz").unlink()
    with pytest.raises(SeqLabError, match="b.npz not found"):
        load_spec(tmp_path / "hybrid.json")
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(SeqLabError, match="bad.json: not a hybrid model file"):
        load_spec(tmp_path / "bad.json")
