import math

import pandas as pd
import pytest

from seqlab.errors import SeqLabError
from seqlab.leaderboard import dvc_metrics, leaderboard, learning_curves, plot_learning_curves


def summary(name, valid_ppl, fingerprint="f", vocab="v"):
    split = lambda ppl: {"ppl": ppl, "xent_nats": math.log(ppl), "xent_bits": math.log2(ppl), "bits_per_char": 1.0,  # noqa: E731
                         "tokens": 10, "oov_tokens": 1, "zero_prob_tokens": 0 if math.isfinite(ppl) else 3,
                         "fingerprint": fingerprint}
    return {"model": name, "family": "ngram", "estimator": name.split("-")[1], "order": 2, "registered_model": "seqlab-ngram",
            "vocab_sha256": vocab, "valid": split(valid_ppl), "test": split(valid_ppl * 1.1)}


def board_of(*summaries):
    return leaderboard({f"models/ngram/{s['model']}": s for s in summaries})


def test_ranked_by_valid_perplexity_with_inf_last():
    board = board_of(summary("ngram-kn-2", 50.0), summary("ngram-mle-2", math.inf), summary("ngram-mkn-2", 40.0))
    assert list(board.model) == ["ngram-mkn-2", "ngram-kn-2", "ngram-mle-2"] and list(board["rank"]) == [1, 2, 3]
    assert board.path.iloc[0] == "models/ngram/ngram-mkn-2" and set(board.registered_model) == {"seqlab-ngram"}
    metrics = dvc_metrics(board)
    assert metrics["best_model"] == "ngram-mkn-2" and metrics["models"]["ngram-mle-2"]["test_ppl"] == "inf"
    assert metrics["test_tokens"] == 10 and metrics["test_oov_tokens"] == 1
    mkn = metrics["models"]["ngram-mkn-2"]
    assert mkn["valid_xent_nats"] == pytest.approx(math.log(40.0)) and mkn["valid_xent_bits"] == pytest.approx(math.log2(40.0))
    assert mkn["test_xent_bits"] == pytest.approx(math.log2(44.0)) and mkn["test_ppl"] == pytest.approx(44.0)


def test_models_scored_on_different_tokens_or_vocabularies_are_refused():
    with pytest.raises(SeqLabError, match="models/ngram/ngram-kn-2 and models/ngram/ngram-mkn-2 were scored on different test tokens"):
        board_of(summary("ngram-kn-2", 50.0, "a"), summary("ngram-mkn-2", 40.0, "b"))
    with pytest.raises(SeqLabError, match="use different vocabularies"):
        board_of(summary("ngram-kn-2", 50.0, vocab="a"), summary("ngram-mkn-2", 40.0, vocab="b"))


def test_learning_curves_put_each_model_in_a_column_by_round(tmp_path):
    history = lambda *ppl: [{"round": i + 1, "tokens": 1000 * (i + 1), "train_loss": math.log(p) + 0.1, "valid_ppl": p}  # noqa: E731
                            for i, p in enumerate(ppl)]
    curves = {"tuned": history(90.0, 80.0, 85.0), "transformer": history(120.0, 110.0)}
    frame = learning_curves(curves)
    assert list(frame.columns) == ["round", "tuned", "transformer"]
    assert frame.tuned.tolist() == [90.0, 80.0, 85.0]
    assert frame.transformer.tolist()[:2] == [120.0, 110.0] and pd.isna(frame.transformer.iloc[2])  # stopped early
    plot_learning_curves(curves, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_two_models_of_one_name_are_refused():
    with pytest.raises(SeqLabError, match="models/a and models/b are both named 'lstm'"):
        leaderboard({"models/a": summary("ngram-kn-2", 50.0) | {"model": "lstm"}, "models/b": summary("ngram-kn-3", 40.0) | {"model": "lstm"}})
