import subprocess
import sys
from pathlib import Path

import pytest

from helpers import SENTENCES, model_config
from seqlab.models import build
from seqlab.models.checkpoint import save_checkpoint
from seqlab.ngram import Segments, count, estimate
from seqlab.ngram.arpa import write_arpa
from seqlab.ngram.model_file import save_model
from seqlab.vocab import BOS, EOS, build_vocab, save_vocab

SEQLAB = Path(sys.executable).parent / "seqlab"
TRAIN = [s.split() for s in SENTENCES[:3] * 3]


@pytest.fixture
def workspace(tmp_path):
    vocab = build_vocab(TRAIN)
    save_vocab(vocab, tmp_path / "vocab")
    bos, eos = vocab.index[BOS], vocab.index[EOS]
    segments = Segments.from_sentences([vocab.encode(s) for s in TRAIN], bos, eos)
    model = estimate("mkn", count(segments, 3, len(vocab)), len(vocab), bos)
    write_arpa(model, list(vocab.tokens), tmp_path / "m.arpa")
    save_model(model, tmp_path / "m.npz", vocab.sha256)
    (tmp_path / "test.txt").write_text("the cat sat on a log\nthe zebra\n")
    return tmp_path


def seqlab(workspace, *args):
    return subprocess.run([str(SEQLAB), "score", *args, "--tokens", "test.txt", "--vocab", "vocab"],
                          cwd=workspace, capture_output=True, text=True, timeout=120)


def test_score_arpa_and_model_file_agree(workspace):
    arpa, npz = seqlab(workspace, "m.arpa"), seqlab(workspace, "m.npz")
    assert arpa.returncode == 0 and npz.returncode == 0, arpa.stderr + npz.stderr
    assert "10 tokens (1 OOV scored as <unk>, 0 with zero probability)" in arpa.stdout
    ppl = lambda out: float(out.split("perplexity ")[1].split()[0])  # noqa: E731
    assert ppl(arpa.stdout) == pytest.approx(ppl(npz.stdout), rel=1e-5)


def test_truncated_arpa_fails_in_one_line(workspace):
    text = (workspace / "m.arpa").read_text()
    (workspace / "m.arpa").write_text(text[: len(text) * 2 // 3])
    result = seqlab(workspace, "m.arpa")
    assert result.returncode == 1
    assert result.stderr.startswith("error: m.arpa: ") and result.stderr.count("\n") == 1
    assert "malformed" in result.stderr or "truncated" in result.stderr


def test_model_for_another_vocabulary_fails_in_one_line(workspace):
    save_vocab(build_vocab(TRAIN + [["new", "words"]]), workspace / "vocab")
    result = seqlab(workspace, "m.npz")
    assert result.returncode == 1 and result.stderr.startswith("error: m.npz: built for vocabulary")


def neural_checkpoint(workspace, vocab) -> Path:
    config = model_config(len(vocab), embed_dim=8, hidden_dim=8, layers=1, heads=2, memory=4, cutoffs=(5,))
    save_checkpoint(workspace / "model.pt", build(config), vocab.sha256)
    return workspace / "model.pt"


def test_a_neural_checkpoint_scores_and_a_damaged_or_foreign_one_is_one_line(workspace):
    vocab = build_vocab(TRAIN)
    data = neural_checkpoint(workspace, vocab).read_bytes()
    assert seqlab(workspace, "model.pt").returncode == 0

    (workspace / "model.pt").write_bytes(data[: len(data) // 2])
    truncated = seqlab(workspace, "model.pt")
    assert truncated.returncode == 1
    assert truncated.stderr.startswith("error: model.pt: not a readable checkpoint (corrupt or truncated?)")
    assert truncated.stderr.count("\n") == 1 and truncated.stdout == ""

    save_vocab(build_vocab(TRAIN + [["new", "words"]]), workspace / "vocab")
    (workspace / "model.pt").write_bytes(data)
    foreign = seqlab(workspace, "model.pt")
    assert foreign.returncode == 1 and foreign.stderr.count("\n") == 1 and foreign.stdout == ""
    assert foreign.stderr.startswith(f"error: model.pt: trained with vocabulary {vocab.sha256[:12]}, but the vocabulary given is ")


@pytest.mark.parametrize("size", ["0", "-3"])
def test_a_batch_size_below_one_is_one_line(workspace, size):
    result = seqlab(workspace, "m.npz", "--batch-size", size)
    assert result.returncode == 1 and result.stderr == f"error: --batch-size must be at least 1 (got {size})\n"


def test_random_bytes_named_model_pt_are_one_line_without_unsafe_advice(workspace):
    (workspace / "model.pt").write_bytes(bytes(range(256)) * 8)
    result = seqlab(workspace, "model.pt")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert result.stderr.startswith("error: model.pt: not a readable checkpoint") and "weights_only" not in result.stderr
