"""`seqlab predict` / `seqlab generate`: next-token lists, sampling, heatmaps, bad models."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import LINES, model_config, train_params
from seqlab.cli import main
from seqlab.generate import generate
from seqlab.loading import load
from seqlab.scoring import eval_set
from seqlab.models import build
from seqlab.models.checkpoint import save_checkpoint
from seqlab.tokenize import WordTokenizer, save_tokenizer
from seqlab.training import fit
from seqlab.training.lm import LanguageModelTask
from seqlab.vocab import build_vocab, save_vocab



@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """A vocabulary, a tokenizer and a small trained LSTM-attention checkpoint in data/ and models/."""
    root = tmp_path_factory.mktemp("gen")
    tokenizer = WordTokenizer(r"\w+|[^\w\s]", False)
    lines = [tokenizer.tokenize(line) for line in LINES * 30]
    vocab = build_vocab(lines)
    save_vocab(vocab, root / "data" / "vocab")
    save_tokenizer(tokenizer, root / "data" / "tokens" / "tokenizer.json")
    ids = eval_set(lines, vocab, 0).segments.ids
    valid = eval_set(lines[:3], vocab, 0)
    torch.manual_seed(0)
    model = build(model_config(len(vocab), embed_dim=24, hidden_dim=24, layers=1, memory=8, cutoffs=(5, 9)))
    cfg = train_params(batch_size=2, bptt=12, tokens=8 * len(ids), eval_every=len(ids), lr=1e-2, eval_batch_size=1)
    fit(model, LanguageModelTask(ids, valid.segments.ids, valid.scored, vocab.sha256), cfg, root / "work", "f", progress=False)
    (root / "models" / "neural").mkdir(parents=True)
    (root / "work" / "best.pt").rename(root / "models" / "neural" / "model.pt")
    return root


@pytest.fixture
def in_project(project, monkeypatch) -> Path:
    monkeypatch.chdir(project)
    return project


def test_predict_lists_the_top_k_next_tokens(in_project, capsys):
    main(["predict", "--context", "the cat sat on the", "--top-k", "3"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    probabilities = [float(p) for p, _ in rows]
    assert len(rows) == 3 and probabilities == sorted(probabilities, reverse=True)
    assert rows[0][1] in {"mat", "log"} and sum(probabilities) <= 1 + 1e-6


def test_generate_is_reproducible_with_a_seed_and_counts_its_tokens(in_project, capsys):
    args = ["generate", "--prompt", "the dog", "--max-tokens", "25", "--temperature", "0.8", "--top-k", "4", "--seed", "1"]
    main(args)
    first = capsys.readouterr()
    main(args)
    second = capsys.readouterr()
    assert first.out == second.out and first.out.startswith("the dog")
    assert "2 prompt tokens" in first.err and "25 tokens generated at" in first.err
    loaded = load("models/neural/model.pt")
    result = generate(loaded, "the dog", 25, 0.8, 4, seed=1)
    assert len(result.generated) == 25 and "<unk>" not in result.tokens and "<s>" not in result.tokens


def test_generation_carries_state_instead_of_rereading_the_prefix(in_project):
    """The prompt is read once, then one token per call; every sampled distribution equals the one
    a full forward pass over everything before it gives."""
    loaded = load("models/neural/model.pt")
    model, vocab = loaded.network, loaded.vocab
    calls, distributions = [], []
    forward, log_probs = model.forward, model.output.log_probs
    model.forward = lambda ids, state, need_weights=False: calls.append(ids.shape[1]) or forward(ids, state, need_weights)
    model.output.log_probs = lambda features: distributions.append(log_probs(features)) or distributions[-1]
    result = generate(loaded, "the cat", 12, seed=3)
    del model.forward, model.output.log_probs
    assert calls[0] == 3 and set(calls[1:]) == {1}

    fed, predicted_at = [vocab.index["<s>"], vocab.index["the"], vocab.index["cat"]], [2]
    for token in result.generated:
        fed.append(vocab.index[token])
        if token == "</s>":
            fed.append(vocab.index["<s>"])
        predicted_at.append(len(fed) - 1)
    with torch.no_grad():
        features, _, _ = model(torch.tensor([fed]), model.init_state(1))
        full = model.output.log_probs(features[0])
    assert len(distributions) == 12
    for position, distribution in zip(predicted_at, distributions):
        assert torch.allclose(full[position], distribution, atol=1e-5)


def test_visualize_writes_a_readable_heatmap(in_project, capsys):
    main(["generate", "--prompt", "the cat sat", "--max-tokens", "20", "--seed", "2", "--visualize", "attention.png"])
    assert "attention heatmap: attention.png" in capsys.readouterr().err
    image = Image.open(in_project / "attention.png")
    assert image.width >= 600 and image.height >= 600
    loaded = load("models/neural/model.pt")
    result = generate(loaded, "the cat sat", 20, seed=2, need_weights=True)
    assert len(result.attention) == 4 + 20 + result.tokens.count("</s>")  # every fed position
    for position, (start, weights) in enumerate(result.attention):  # itself and at most 8 before it
        assert start + len(weights) - 1 == position and start == max(0, position - 8)
        assert np.isclose(weights.sum(), 1.0, atol=1e-5)


def test_bad_model_files_are_one_line_errors(in_project, capsys):
    (in_project / "broken.pt").write_bytes((in_project / "models/neural/model.pt").read_bytes()[:500])
    torch.manual_seed(0)
    save_checkpoint(in_project / "other.pt", build(model_config(12, cutoffs=(4, 8))), "f" * 64)
    cases = {
        "broken.pt": "broken.pt: not a readable checkpoint (corrupt or truncated?)",
        "other.pt": "other.pt: trained with vocabulary ffffffffffff, but the vocabulary given is",
        "nothing.pt": "nothing.pt: checkpoint not found",
    }
    for name, message in cases.items():
        with pytest.raises(SystemExit) as exit_:
            main(["predict", "--model", name, "--context", "the"])
        err = capsys.readouterr().err.strip()
        assert exit_.value.code == 1 and err.startswith(f"error: {message}") and "\n" not in err


def test_a_plain_lstm_has_no_heatmap_to_draw(in_project, capsys):
    torch.manual_seed(0)
    loaded = load("models/neural/model.pt")
    plain = build(replace(loaded.network.config, attention="none"))
    save_checkpoint(in_project / "plain.pt", plain, loaded.vocab.sha256)
    with pytest.raises(SystemExit):
        main(["generate", "--model", "plain.pt", "--prompt", "the", "--visualize", "x.png"])
    assert "this model has no attention to draw (model.attention: none)" in capsys.readouterr().err
    assert not (in_project / "x.png").exists()


def test_every_kind_of_model_predicts_and_only_neural_ones_generate(in_project, capsys):
    import json

    from seqlab.hybrid import spec
    from seqlab.ngram import count, estimate
    from seqlab.ngram.model_file import save_model
    from seqlab.vocab import BOS, load_vocab

    vocab = load_vocab("data/vocab")
    tokenizer = WordTokenizer(r"\w+|[^\w\s]", False)
    segments = eval_set([tokenizer.tokenize(line) for line in LINES * 30], vocab, 0).segments
    model = estimate("mkn", count(segments, 3, len(vocab)), len(vocab), vocab.index[BOS])
    Path("models/ngram").mkdir(parents=True, exist_ok=True)
    save_model(model, "models/ngram/model.npz", vocab.sha256)
    Path("models/hybrid").mkdir(parents=True, exist_ok=True)
    parts = [("lstm-dot", Path("models/neural/model.pt")), ("ngram-mkn-3", Path("models/ngram/model.npz"))]
    Path("models/hybrid/hybrid.json").write_text(json.dumps(spec(parts, [0.25, 0.75], 3)))
    seen = {}
    for path in ("models/neural/model.pt", "models/ngram/model.npz", "models/hybrid"):
        main(["predict", "--model", path, "--context", "the cat sat on the", "--top-k", "0"])
        rows = [line.split() for line in capsys.readouterr().out.splitlines()]
        seen[path] = {token: float(p) for p, token in rows}
        assert sum(seen[path].values()) == pytest.approx(1.0, abs=1e-5)  # the whole vocabulary, summing to 1
    for token in ("mat", "log"):
        mixed = 0.25 * seen["models/neural/model.pt"][token] + 0.75 * seen["models/ngram/model.npz"][token]
        assert seen["models/hybrid"][token] == pytest.approx(mixed, abs=2e-6)  # printed with 6 decimals
    for path in ("models/ngram/model.npz", "models/hybrid"):
        with pytest.raises(SystemExit):
            main(["generate", "--model", path, "--prompt", "the"])
        assert capsys.readouterr().err.strip() == f"error: {path}: generation needs a neural model (this is an n-gram model or a hybrid); `seqlab predict` works with every model"


def test_a_negative_top_k_is_one_line(in_project, capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--context", "the", "--top-k", "-1"])
    assert capsys.readouterr().err.strip() == "error: --top-k must be 0 (all) or more (got -1)"


@pytest.mark.parametrize("option, value, line", [
    ("--temperature", "nan", "error: --temperature must be a positive number (got nan)"),
    ("--temperature", "inf", "error: --temperature must be a positive number (got inf)"),
    ("--temperature", "0", "error: --temperature must be a positive number (got 0.0)"),
    ("--top-k", "-5", "error: --top-k must be 0 (all) or more (got -5)"),
])
def test_bad_sampling_options_are_one_line(in_project, capsys, option, value, line):
    with pytest.raises(SystemExit) as exit_status:
        main(["generate", "--prompt", "the", option, value])
    assert exit_status.value.code == 1 and capsys.readouterr().err.strip() == line


def test_a_reader_that_closes_the_pipe_ends_predict_quietly(in_project):
    """`seqlab predict --top-k 0 | head -3`: the reader is gone before the list is written."""
    seqlab = Path(sys.executable).parent / "seqlab"
    child = subprocess.Popen([str(seqlab), "predict", "--context", "the cat", "--top-k", "0"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
    child.stdout.close()  # before the child can write a line
    err = child.stderr.read().decode()
    assert child.wait(timeout=120) == 141 and err == ""  # 128 + SIGPIPE, as a shell tool ends; no traceback
