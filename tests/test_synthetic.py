"""Corpora from a known Markov chain: the chain's own cross-entropy, and the real stages reaching it."""

import json
import math

import numpy as np
import pytest
import yaml

from helpers import dvc, make_project
from seqlab.synthetic import Chain, write_corpus

CHAIN = Chain(states=12, order=2, support=3, alpha=0.5, mean_length=20, seed=1)


def test_every_context_is_a_distribution_and_no_sequence_is_empty():
    table = CHAIN.table
    assert table.shape == (13**2, 13) and np.allclose(table.sum(axis=1), 1.0)
    assert ((table[:, :12] > 0).sum(axis=1) == 3).all()  # the support, and the end
    starts = [context for context in range(13**2) if context % 13 == 12]
    assert (table[starts, 12] == 0).all() and (np.delete(table, starts, axis=0)[:, 12] == 1 / 20).all()


def test_the_true_cross_entropy_is_the_mean_log_probability_of_the_scored_tokens(tmp_path):
    truth = write_corpus(CHAIN, tmp_path, 2000, 500)
    table, lines = CHAIN.table, (tmp_path / "test.txt").read_text().splitlines()
    total, count = 0.0, 0
    for line in lines:
        context = [12, 12]
        for outcome in [int(state[1:]) for state in line.split()] + [12]:  # every state and the end
            total -= math.log(table[context[0] * 13 + context[1], outcome])
            count += 1
            context = [context[1], outcome]
    assert truth["test"] == pytest.approx(total / count, rel=1e-12) and all(line for line in lines)
    assert write_corpus(CHAIN, tmp_path / "again", 2000, 500) == truth  # seeded
    assert (tmp_path / "again" / "train.txt").read_bytes() == (tmp_path / "train.txt").read_bytes()


@pytest.mark.slow
def test_the_stages_reach_the_chains_own_cross_entropy(tmp_path):
    """The real stages on 80k tokens of an order-2 chain over 12 states: n-gram models of order 3
    match the chain's structure and land within 2 % of its cross-entropy on the test split; the neural
    model, which has to learn that structure, within 8 % (at 1M tokens the benchmark finds the n-grams
    within 1 % and the tuned LSTM 7 % above: docs/benchmarks.md); models of order 1 and 2 stay
    far above it. Then the feed-forward n-gram of a trigram's reach, within 2 % like the n-grams."""
    root = make_project(
        tmp_path, tokenize__pattern=r"\S+", ngram__orders=[1, 2, 3], ngram__estimators=["addk", "kn", "mkn"],
        model__embed_dim=48, model__hidden_dim=48, model__memory=8, model__cutoffs=[2000, 8000],
        train__batch_size=16, train__bptt=32, train__lr=0.01, train__tokens=1_600_000, train__eval_every=200_000,
        train__eval_batch_size=16, train__checkpoint_every=1000, tune__optimization_config={})
    truth = write_corpus(CHAIN, root / "data" / "corpus", 80_000, 8_000)
    result = dvc(root, "repro", "train", "ngram")
    assert "the full softmax is used (model.output: full)" in result.stdout  # 15 tokens: the cut-offs do not fit
    xent = {folder.name: json.loads((folder / "scores.json").read_text())["test"]
            for folder in (root / "models" / "ngram").iterdir()}
    xent["neural"] = json.loads((root / "models" / "neural" / "scores.json").read_text())["test"]
    assert len({s["fingerprint"] for s in xent.values()}) == 1  # the same test tokens for every model
    gap = {name: s["xent_nats"] / truth["test"] - 1 for name, s in xent.items()}
    print({name: f"{g:+.2%}" for name, g in sorted(gap.items(), key=lambda item: item[1])})
    best = min((name for name in gap if name != "neural"), key=gap.get)
    assert best.endswith("-3") and -0.01 < gap[best] < 0.02
    assert -0.01 < gap["neural"] < 0.08
    assert all(gap[name] > 0.5 for name in gap if name.endswith(("-1", "-2")))

    # the feed-forward n-gram with a trigram's reach, as configs/tune_state_sequences.json trains it:
    # no older state to learn spurious patterns from, so it comes as close as the n-grams
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["model"].update(kind="feedforward", memory=1, embed_dim=32, hidden_dim=128, dropout_embed=0.0, dropout_rnn=0.0,
                           dropout_out=0.0)
    params["train"].update(batch_size=8, lr=0.003)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    assert "train feedforward: " in dvc(root, "repro", "train").stdout
    feedforward = json.loads((root / "models" / "neural" / "scores.json").read_text())["test"]
    assert feedforward["fingerprint"] == xent["neural"]["fingerprint"]
    gap["feedforward"] = feedforward["xent_nats"] / truth["test"] - 1
    print(f"feedforward {gap['feedforward']:+.2%}")
    assert -0.01 < gap["feedforward"] < 0.02 and gap["feedforward"] < gap["neural"]
