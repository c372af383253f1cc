"""What the tests share: the tiny corpus, configs from the project's own params.yaml, a learnable token
stream with a trainer run on it, and a fresh DVC project with the commands that drive it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# --- the tiny corpus ------------------------------------------------------------------------------

# sentences of a few words over a dozen types: every n-gram, neural and pipeline test reads these
SENTENCES = ["the cat sat on the mat", "the dog sat on the log", "a cat and a dog", "the mat is red",
             "a red dog sat", "on the mat the cat"]
LINES = ["the cat sat on the mat .", "the dog sat on the log .", "a cat and a dog ran ."]  # with punctuation
TRAIN_LINES = LINES * 4
VALID_LINES = ["the cat ran .", "the dog sat on a mat ."]
TEST_LINES = ["a dog sat on the mat .", "the cat and the log ."]


# word -> its letters in capitals: a transduction every sequence-to-sequence test can learn
PAIR_WORDS = {"train": ["cat", "dog", "mat", "log", "sat", "red", "the", "and", "on", "is", "ran", "a", "tan", "den"],
              "valid": ["cog", "rat"], "test": ["dot", "sad", "tog"]}


def write_pairs(folder: Path, words: dict[str, list[str]] = PAIR_WORDS) -> Path:
    """``{split}.tsv`` of ``word<TAB>W O R D`` lines in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, chosen in words.items():
        (folder / f"{split}.tsv").write_text("".join(f"{w}\t{' '.join(w.upper())}\n" for w in chosen), encoding="utf-8")
    return folder


def write_corpus(folder: Path, train=TRAIN_LINES, valid=VALID_LINES, test=TEST_LINES) -> Path:
    """``train/valid/test.txt``, one sequence per line, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, lines in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{split}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


# --- configs with the project's defaults ------------------------------------------------------------

def project_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def model_config(vocab_size: int, **changes):
    """A ModelConfig of params.yaml's ``model`` section with ``changes`` (an LSTM records the unused
    feed-forward width as its stage does)."""
    from seqlab.models import UNUSED_FF_DIM, ModelConfig

    spec = {**project_params()["model"], "ff_dim": UNUSED_FF_DIM}
    spec = {**spec, **changes}
    return ModelConfig(vocab_size=vocab_size, **{**spec, "cutoffs": tuple(spec["cutoffs"])})


def train_params(**changes):
    """params.yaml's ``train`` section with ``changes``, validated."""
    from seqlab.config import TrainParams

    return TrainParams.model_validate({**project_params()["train"], **changes})


# --- a learnable stream and a trainer run on it ------------------------------------------------------

VOCAB = 30


def stream(length: int, seed: int) -> np.ndarray:
    """A language where each token mostly determines the next: learnable, and far from uniform."""
    rng = np.random.default_rng(seed)
    successor = np.random.default_rng(0).permutation(VOCAB)
    ids = [0]
    for _ in range(length - 1):
        ids.append(int(successor[ids[-1]]) if rng.random() < 0.9 else int(rng.integers(VOCAB)))
    return np.array(ids, dtype=np.int64)


TRAIN_IDS, VALID_IDS = stream(3000, 1), stream(400, 2)
SCORED = np.arange(len(VALID_IDS)) > 0
CONFIG = model_config(VOCAB, embed_dim=16, hidden_dim=24, layers=1, heads=2, memory=6, cutoffs=(6, 15))
PASS = 3000  # tokens in a pass over TRAIN_IDS at batch_size 4 and bptt 10 (75 steps)
TRAIN = train_params(batch_size=4, bptt=10, tokens=3 * PASS, eval_every=PASS, lr=1e-2, patience=2, eval_batch_size=3,
                     checkpoint_every=7)


def run(workdir, config=CONFIG, cfg=TRAIN, **kwargs):
    """Train ``config`` with ``cfg`` on the stream; (model, result)."""
    import torch

    from seqlab.models import build
    from seqlab.training import fit
    from seqlab.training.lm import LanguageModelTask

    torch.manual_seed(cfg.seed)
    model = build(config)
    task = LanguageModelTask(TRAIN_IDS, VALID_IDS, SCORED, "vocab-hash")
    return model, fit(model, task, cfg, workdir, "run-1", progress=False, **kwargs)


def comparable(history) -> list[dict]:
    """A training history without its timings."""
    return [{k: v for k, v in asdict(e).items() if k not in ("tokens_per_s", "seconds")} for e in history]


# --- a fresh DVC project ------------------------------------------------------------------------------

def make_project(root: Path, **changes) -> Path:
    """A git + DVC project with the pipeline, the tiny corpus and small settings; ``section__key=value``
    changes params.yaml."""
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(REPO / name, root / name)
    for name in ("pipelines", "src", "configs"):
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    write_corpus(root / "data" / "corpus")
    write_pairs(root / "data" / "pairs")
    params = project_params()
    params["data"].update(source="directory", path="data/corpus")
    params["vocab"].update(min_freq=1)
    params["ngram"].update(orders=[1, 3])
    params["model"].update(embed_dim=16, hidden_dim=16, layers=1, memory=4, cutoffs=[5, 10])
    params["train"].update(batch_size=2, bptt=8, tokens=200, eval_every=100, eval_batch_size=2, checkpoint_every=3)
    params["tune"].update(tokens=200, eval_every=100, num_samples=2, reduction_factor=2, train_tokens=None,
                          optimization_config={"lr": {"min": 1.0e-3, "max": 1.0e-2}, "hidden_dim": {"values": [8, 16]}})
    params["pairs"].update(source="directory", path="data/pairs", max_oov_rate=0.5)
    params["seq2seq"].update(embed_dim=8, hidden_dim=8, heads=2)
    params["seq2seq_train"].update(batch_size=4, tokens=120, eval_every=60, eval_batch_size=4, checkpoint_every=5)
    params["seq2seq_tune"].update(tokens=120, eval_every=60, num_samples=2, train_tokens=None,
                                  optimization_config={"lr": {"min": 1.0e-3, "max": 1.0e-2}, "hidden_dim": {"values": [8, 16]}})
    params["seq2seq_baselines"]["transformer"] = {"kind": "transformer", "encoder_layers": 2, "decoder_layers": 2}  # the opt-in entry
    for dotted, value in changes.items():
        section, key = dotted.split("__")
        params[section][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    sh(root, "git", "init", "-q")
    sh(root, str(BIN / "dvc"), "init", "-q")
    shutil.copy(REPO / ".dvc" / "config", root / ".dvc" / "config")
    commit(root, "project")
    return root


def copy_project(source: Path, target: Path) -> Path:
    """A copy of a built project (workspace, git, DVC cache, tracking store) for a test that changes
    it; the copy's tracking store points at its own artifacts, so nothing it logs lands in the source."""
    import sqlite3

    shutil.copytree(source, target, symlinks=True)
    store = target / "mlruns" / "mlflow.db"
    if store.exists():
        with sqlite3.connect(store) as db:
            for (table,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall():
                for column in db.execute(f"PRAGMA table_info('{table}')").fetchall():
                    if column[2].upper().startswith(("VARCHAR", "TEXT")):
                        name = column[1]
                        db.execute(f'UPDATE "{table}" SET "{name}" = REPLACE("{name}", ?, ?) WHERE "{name}" LIKE ?',
                                   (str(source), str(target), f"%{source}%"))
    return target


def commit(root: Path, message: str) -> None:
    sh(root, "git", "add", "-A")
    sh(root, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)


def env() -> dict:
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "GX_ANALYTICS_ENABLED": "false"}


def sh(root: Path, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=root, env=env(), capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def dvc(root: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    return sh(root, str(BIN / "dvc"), *args, check=check)


def runs(root: Path):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{root / 'mlruns' / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["seqlab"], order_by=["attributes.start_time ASC"])


def with_train(**changes):
    """``TRAIN`` with ``changes``."""
    return TRAIN.model_copy(update=changes)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
