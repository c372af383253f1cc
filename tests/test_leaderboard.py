import math

import pytest

from seqlab.errors import SeqLabError
from seqlab.leaderboard import dvc_metrics, leaderboard


def summary(name, valid_ppl, fingerprint="f"):
    split = lambda ppl: {"ppl": ppl, "xent_nats": math.log(ppl), "xent_bits": math.log2(ppl), "bits_per_char": 1.0,  # noqa: E731
                         "tokens": 10, "oov_tokens": 1, "zero_prob_tokens": 0 if math.isfinite(ppl) else 3,
                         "fingerprint": fingerprint}
    return {"model": name, "family": "ngram", "estimator": name.split("-")[1], "order": 2,
            "valid": split(valid_ppl), "test": split(valid_ppl * 1.1)}


def test_ranked_by_valid_perplexity_with_inf_last():
    board = leaderboard([summary("ngram-kn-2", 50.0), summary("ngram-mle-2", math.inf), summary("ngram-mkn-2", 40.0)])
    assert list(board.model) == ["ngram-mkn-2", "ngram-kn-2", "ngram-mle-2"] and list(board["rank"]) == [1, 2, 3]
    metrics = dvc_metrics(board)
    assert metrics["best_model"] == "ngram-mkn-2" and metrics["models"]["ngram-mle-2"]["test_ppl"] == "inf"
    assert metrics["test_tokens"] == 10 and metrics["test_oov_tokens"] == 1


def test_models_scored_on_different_tokens_are_refused():
    with pytest.raises(SeqLabError, match="different test tokens"):
        leaderboard([summary("ngram-kn-2", 50.0, "a"), summary("ngram-mkn-2", 40.0, "b")])
