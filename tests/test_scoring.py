import json
import math

import numpy as np
import pytest

from seqlab.errors import SeqLabError
from seqlab.io import write_json
from seqlab.scoring import Summary, eval_set, read_eval_set, read_summary, score
from seqlab.vocab import build_vocab

VOCAB = build_vocab([["a", "b", "a"]])


class Uniform:
    """Every token has probability 1/4: perplexity 4 whatever the text."""

    def log_probs(self, segments):
        return np.full(len(segments.ids), math.log(0.25))


def test_counting_convention_and_units():
    data = eval_set([["a", "zebra"], ["b"]], VOCAB, characters=8)
    assert data.tokens == 5  # a zebra </s> b </s>: every token and </s>, not <s>
    assert data.oov == 1 and data.characters == 10  # + one newline per sequence
    scores = score(Uniform(), data)
    assert scores.ppl == pytest.approx(4.0)
    assert scores.xent_nats == pytest.approx(math.log(4)) and scores.xent_bits == pytest.approx(2.0)
    assert scores.bits_per_char == pytest.approx(2.0 * 5 / 10)


def test_zero_probability_gives_inf_with_a_warning(tmp_path):
    class Zero(Uniform):
        def log_probs(self, segments):
            out = super().log_probs(segments)
            out[1] = -np.inf
            return out

    with pytest.warns(UserWarning, match="1 of 5 tokens have zero probability; perplexity is inf"):
        scores = score(Zero(), eval_set([["a", "zebra"], ["b"]], VOCAB, 8), "zero")
    assert scores.ppl == math.inf and scores.zero_prob_tokens == 1

    # scores.json is standard JSON (null, not Infinity), and the readers get the infinity back
    write_json(tmp_path / "scores.json", Summary("ngram-mle-2", "ngram", "mle", 2, "seqlab-ngram", {}, VOCAB.sha256,
                                                 scores, scores).as_dict())
    strict = json.loads((tmp_path / "scores.json").read_text(), parse_constant=lambda name: pytest.fail(f"{name} in scores.json"))
    assert strict["test"]["ppl"] is None and strict["test"]["xent_nats"] is None and strict["test"]["zero_prob_tokens"] == 1
    summary = read_summary(tmp_path)
    assert summary["test"]["ppl"] == math.inf and summary["valid"]["xent_bits"] == math.inf


def test_empty_split_is_refused():
    with pytest.raises(SeqLabError, match="test.txt: no sequences to score"):
        eval_set([], VOCAB, 0, "test.txt")


def test_a_token_file_read_in_blocks_is_the_split_read_whole(tmp_path, monkeypatch):
    """``read_eval_set`` streams the file; ids, segments, OOV count, characters and fingerprint are those
    of the lines encoded at once."""
    from seqlab import io
    from seqlab.tokenize import read_stream

    path = tmp_path / "test.txt"
    path.write_text("\na b zebra\n\nb b a\nyak\nb \u00e9t\u00e9\n\n", encoding="utf-8")  # empty lines first and last, a word not ASCII
    whole = eval_set(read_stream(path), VOCAB, 20, str(path))
    blocks = io.read_line_blocks
    monkeypatch.setattr(io, "read_line_blocks", lambda p, **shard: blocks(p, 3, **shard))  # a block a line or less
    streamed = read_eval_set(path, VOCAB, 20)
    assert (streamed.oov, streamed.characters, streamed.fingerprint) == (whole.oov, whole.characters, whole.fingerprint) == (
        3, 27, whole.fingerprint)
    for name in ("ids", "offset"):
        np.testing.assert_array_equal(getattr(streamed.segments, name), getattr(whole.segments, name))
    np.testing.assert_array_equal(streamed.scored, whole.scored)
