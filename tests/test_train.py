"""The trainer and checkpoints: learning, early stopping, resume after kill -9, safe loading."""

import math
import os
import random
import subprocess
import sys
import tempfile
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from helpers import CONFIG, PASS, SCORED, TRAIN, TRAIN_IDS, VALID_IDS, comparable, run, with_train
from seqlab.training import fit
from seqlab.training.lm import LanguageModelTask
from seqlab.errors import SeqLabError
from seqlab.models import build
from seqlab.models.checkpoint import load_checkpoint, save_checkpoint
from seqlab.models.neural_lm import autocast, stream_log_probs, uses_bf16

def test_training_learns_the_language(tmp_path):
    _, result = run(tmp_path)
    # uniform (and unigram) perplexity is about 30; the source's own is 1.9
    assert result.history[0].valid_ppl < 15 and result.best_valid_ppl < 7
    assert [e.valid_loss for e in result.history] == sorted((e.valid_loss for e in result.history), reverse=True)
    best = load_checkpoint(tmp_path / "best.pt", "vocab-hash")
    log_probs = stream_log_probs(best, VALID_IDS, batch_size=3, window=64)  # as the trainer scores valid
    assert math.isclose(math.exp(-log_probs[SCORED].mean()), result.best_valid_ppl, rel_tol=1e-9)


def test_early_stopping_after_patience_rounds_without_improvement(tmp_path):
    frozen = with_train(lr=1e-30, tokens=10 * PASS, patience=2)
    _, result = run(tmp_path, cfg=frozen)
    assert result.stopped_early and len(result.history) == 3 and result.best_round == 1


def test_a_model_blown_up_by_its_rate_has_an_infinite_perplexity_not_a_crash(tmp_path):
    _, result = run(tmp_path, cfg=with_train(lr=1e6, tokens=PASS))  # clipping keeps the loss finite, far past exp's range
    assert result.history[0].valid_loss > 1e3 and result.history[0].valid_ppl == math.inf == result.best_valid_ppl


def test_the_budget_is_tokens_seen_in_rounds_whatever_the_corpus_size(tmp_path):
    """Five passes' worth of tokens over the stream, or fifteen over a third of it: the same steps,
    rounds and schedule; the short stream is read again from its start as often as it takes."""
    cfg = with_train(tokens=5 * PASS, eval_every=2 * PASS, patience=3)  # 375 steps of 40 tokens, a round every 150
    _, result = run(tmp_path / "whole", cfg=cfg)
    torch.manual_seed(cfg.seed)
    short = fit(build(CONFIG), LanguageModelTask(TRAIN_IDS[:1000], VALID_IDS, SCORED, "vocab-hash"), cfg, tmp_path / "short",
                "run-short", progress=False)
    for history in (result.history, short.history):
        assert [(r.round, r.steps) for r in history] == [(1, 150), (2, 300), (3, 375)]
        assert all(0.99 * r.steps * 40 <= r.tokens <= r.steps * 40 for r in history)  # a pass's last window is shorter
        assert history[-1].lr == pytest.approx(0.0, abs=1e-12)  # the cosine ends at 0 with the budget
        assert history[0].lr == pytest.approx(cfg.lr * 0.5 * (1 + math.cos(math.pi * 150 / 375)))


def test_the_plateau_schedule_halves_the_rate_after_a_round_without_improvement(tmp_path, monkeypatch):
    monkeypatch.setattr("seqlab.training.lm.valid_loss", lambda *args: 1.0)  # never better than the first round
    plateau = with_train(lr=1e-2, schedule="plateau", lr_factor=0.5, lr_patience=0, patience=10, tokens=4 * PASS)
    _, result = run(tmp_path, cfg=plateau)
    assert [r.lr for r in result.history] == [1e-2, 1e-2, 5e-3, 2.5e-3]


@pytest.mark.parametrize("changes", [{}, {"attention": "multihead"}, {"attention": "none", "rnn": "gru"},
                                     {"output": "full", "tie_weights": True}, {"kind": "transformer", "ff_dim": 24}])
def test_training_scoring_and_generation_run_under_bf16_autocast(tmp_path, changes):
    """The GPU path's bf16 autocast, run on CPU: a dtype mistake in it fails here, not on the first GPU."""
    from seqlab.generate import generate
    from seqlab.loading import Loaded
    from seqlab.models.neural_lm import NeuralLM
    from seqlab.tokenize import WordTokenizer
    from seqlab.vocab import build_vocab

    words = [f"s{i}" for i in range(CONFIG.vocab_size - 3)]  # the specials make it the model's vocabulary
    vocab = build_vocab([words])
    config = replace(CONFIG, **changes)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        model, result = run(tmp_path, config, with_train(tokens=PASS // 2, eval_every=PASS // 4))
        assert len(result.history) == 2 and all(math.isfinite(r.valid_loss) for r in result.history)
        assert result.history[1].valid_loss < result.history[0].valid_loss  # it learns
        features, _, _ = model.eval()(torch.from_numpy(TRAIN_IDS[:20])[None], model.init_state(1))
        assert model.output.log_probs(features).dtype == torch.float32  # what scoring sums is float32 whatever the features
        scorer = NeuralLM(model, batch_size=3, window=7)
        predicted = scorer.next_log_probs(TRAIN_IDS[:50].tolist())
        assert np.isfinite(predicted).all() and np.exp(predicted).sum() == pytest.approx(1.0, abs=1e-2)
        attention = config.kind == "transformer" or config.attention != "none"
        generation = generate(Loaded(scorer, vocab, WordTokenizer(r"\S+", False)), "s1 s2 s3", max_tokens=6, seed=0,
                              need_weights=attention)
    assert len(generation.tokens) == 3 + 6 and all(t in vocab.index for t in generation.tokens)
    assert bool(generation.attention) == attention


@pytest.mark.parametrize("amp, device, native, enabled", [
    (False, "cpu", True, False), (True, "cpu", True, False), ("cpu", "cpu", True, True), ("cpu", "cpu", False, False),
    (True, "cuda", False, True), ("cpu", "cuda", False, True), (False, "cuda", True, False)])
def test_amp_is_bf16_on_cuda_and_with_cpu_on_a_cpu_with_native_bf16_only(monkeypatch, amp, device, native, enabled):
    monkeypatch.setattr("seqlab.models.neural_lm.native_bf16", lambda: native)
    assert uses_bf16(torch.device(device), amp) is enabled
    if device == "cpu":
        with autocast(torch.device(device), amp):
            assert torch.is_autocast_enabled("cpu") is enabled
            assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == (torch.bfloat16 if enabled else torch.float32)


CHILD = """
import os, signal, sys
import torch
sys.path.insert(0, {tests!r})
from helpers import run
steps, step = 0, torch.optim.Adam.step
def counted(self, *args, **kwargs):  # SIGKILL before optimizer step 147: round 2 (75 steps each), step 72
    global steps
    steps += 1
    if steps == 75 + 72:
        os.kill(os.getpid(), signal.SIGKILL)
    return step(self, *args, **kwargs)
torch.optim.Adam.step = counted
run(sys.argv[1])
"""


def test_resume_after_kill_9_reaches_the_same_weights_and_metrics(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(CHILD.format(tests=str(Path(__file__).parent)))
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "a")], capture_output=True, text=True, timeout=300)
    assert killed.returncode == -9, killed.stderr
    saved = torch.load(tmp_path / "a" / "last.pt", weights_only=True)
    assert saved["step"] == 140  # in round 2 (of 75 steps): the last multiple of 7 before 147

    _, resumed = run(tmp_path / "a")
    _, straight = run(tmp_path / "b")
    assert resumed.resumed_from == "step 140" and straight.resumed_from is None
    assert comparable(resumed.history) == comparable(straight.history)
    a = torch.load(tmp_path / "a" / "best.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "best.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_resume_state_of_other_settings_is_not_used(tmp_path, capsys):
    run(tmp_path, cfg=with_train(tokens=PASS))
    torch.manual_seed(0)
    model = build(CONFIG)
    result = fit(model, LanguageModelTask(TRAIN_IDS, VALID_IDS, SCORED, "vocab-hash"), with_train(tokens=PASS), tmp_path, "run-2", progress=False)
    assert result.resumed_from is None and "starting afresh" in capsys.readouterr().out


def test_an_unreadable_resume_file_is_set_aside(tmp_path, capsys):
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    _, result = run(tmp_path, cfg=with_train(tokens=PASS))
    assert result.resumed_from is None and len(result.history) == 1
    assert f"{tmp_path / 'last.pt'}: unreadable" in capsys.readouterr().out


def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    for config in (CONFIG, replace(CONFIG, kind="transformer", ff_dim=40), replace(CONFIG, attention="multihead", output="full", tie_weights=True)):
        torch.manual_seed(0)
        model = build(config).eval()
        save_checkpoint(tmp_path / "m.pt", model, "vocab-hash")
        loaded = load_checkpoint(tmp_path / "m.pt", "vocab-hash")
        ids = torch.from_numpy(VALID_IDS[:40].reshape(2, 20))
        with torch.no_grad():
            a, _, _ = model(ids, model.init_state(2))
            b, _, _ = loaded(ids, loaded.init_state(2))
            assert torch.equal(model.output.log_probs(a), loaded.output.log_probs(b))
        assert loaded.config == config


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "model.pt", build(CONFIG), "vocab-hash")
    return tmp_path / "model.pt"


def test_bad_checkpoints_are_refused_with_one_line(checkpoint, tmp_path):
    data = checkpoint.read_bytes()
    (tmp_path / "truncated.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "noise.pt").write_bytes(random.Random(0).randbytes(2000))
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    cases = {
        "truncated.pt": "not a readable checkpoint (corrupt or truncated?)",
        "noise.pt": "not a readable checkpoint (corrupt or truncated?)",
        "other.pt": "not a SeqLab neural model checkpoint",
        "missing.pt": "checkpoint not found",
    }
    for name, message in cases.items():
        with pytest.raises(SeqLabError) as err:
            load_checkpoint(tmp_path / name, "vocab-hash")
        assert str(err.value).startswith(f"{tmp_path / name}: {message}") and "\n" not in str(err.value)
    with pytest.raises(SeqLabError, match="trained with vocabulary vocab-hash, but the vocabulary given is other-vocab"):
        load_checkpoint(checkpoint, "other-vocab-hash")


def saved_checkpoint() -> bytes:
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as folder:
        save_checkpoint(Path(folder) / "model.pt", build(CONFIG), "vocab-hash")
        return (Path(folder) / "model.pt").read_bytes()


CHECKPOINT = saved_checkpoint()


@settings(max_examples=300)
@given(st.one_of(st.binary(min_size=1, max_size=3000), st.integers(1, len(CHECKPOINT) - 1).map(lambda n: CHECKPOINT[:n]),
                 st.builds(lambda n, b: CHECKPOINT[:n] + bytes([b]) + CHECKPOINT[n + 1:],
                           st.integers(0, len(CHECKPOINT) - 1), st.integers(0, 255))))
@example(random.Random(0).randbytes(2000))
def test_any_damaged_bytes_are_one_line_never_a_traceback(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "model.pt"
        path.write_bytes(data)
        try:
            with warnings.catch_warnings():  # a damaged config can build zero-sized layers, which torch warns about
                warnings.simplefilter("ignore")
                load_checkpoint(path, "vocab-hash")  # a flipped byte in a tensor's data still loads
        except SeqLabError as err:
            assert "\n" not in str(err) and str(err).startswith(f"{path}: ")


class Boom:
    def __reduce__(self):
        return (os.system, ("touch pwned",))


def test_loading_never_runs_pickled_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.save({"format": "seqlab-neural-lm/1", "payload": Boom()}, tmp_path / "evil.pt")
    with pytest.raises(SeqLabError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "evil.pt", None)
    assert not (tmp_path / "pwned").exists()


def test_too_little_training_data_is_one_clear_error(tmp_path):
    torch.manual_seed(0)
    with pytest.raises(SeqLabError, match="params.yaml: train.batch_size: 4 rows need at least 8 train tokens; the train split has 5"):
        fit(build(CONFIG), LanguageModelTask(TRAIN_IDS[:5], VALID_IDS, SCORED, "v"), TRAIN, tmp_path, "f", progress=False)
