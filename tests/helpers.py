"""What the tests share: the tiny corpus, configs from the project's own params.yaml, a learnable token
stream with a trainer run on it, and a fresh DVC project with the commands that drive it."""

from __future__ import annotations

import math
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
    for name in ("dvc.yaml", "params.yaml", ".dvcignore", ".gitignore"):  # as a clone has them
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


def sh(root: Path, *cmd: str, check: bool = True, extra: dict | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=root, env={**env(), **(extra or {})}, capture_output=True, text=True, timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed:\n{result.stdout}\n{result.stderr}")
    return result


def dvc(root: Path, *args: str, check: bool = True, extra: dict | None = None) -> subprocess.CompletedProcess:
    return sh(root, str(BIN / "dvc"), *args, check=check, extra=extra)


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


# --- experiments run at once ----------------------------------------------------------------------

# Two experiments on a built project: one changes only the hybrid (its best model on valid stays the
# baseline's best n-gram model), one drops order 3 from the grid (its best on valid is another model).
# Against a weak champion each beats it, so each gate's outcome depends on which went first.
EXPERIMENTS = {"hybrid-kn": "hybrid.ngram=kn", "orders-1-2": "ngram.orders=[1,2]"}


def client_of(uri: str):
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def crown(client, name: str, version: str) -> None:
    """Give the language models' ``champion`` alias to ``name`` v``version``, as a user would in the UI."""
    for model in client.search_registered_models("name LIKE 'seqlab-%'"):
        holder = model.aliases.get("champion")
        if holder is not None and client.get_model_version(model.name, holder).tags.get("task") == "lm":
            client.delete_registered_model_alias(model.name, "champion")
    client.set_registered_model_alias(name, "champion", version)


def run_queue(root: Path, jobs: int, extra: dict | None = None, timeout: float = 900) -> None:
    """``EXPERIMENTS`` queued in order with ``dvc exp run --queue`` and run by ``dvc queue start -j jobs``;
    returns when both have ended, and fails with the log of one that did not succeed."""
    import time

    for name, change in EXPERIMENTS.items():
        dvc(root, "exp", "run", "--queue", "-n", name, "-S", change)
    dvc(root, "queue", "start", "-j", str(jobs), extra=extra)  # the workers run with this environment
    deadline = time.monotonic() + timeout
    try:
        while True:
            rows = [line.split() for line in dvc(root, "queue", "status").stdout.splitlines()]
            status = {row[1]: row[-1] for row in rows if len(row) >= 4 and row[1] in EXPERIMENTS}
            if len(status) == len(EXPERIMENTS) and all(s in ("Success", "Failed") for s in status.values()):
                break
            assert time.monotonic() < deadline, f"the queue did not finish in {timeout:.0f} s: {status}"
            time.sleep(2)
    finally:
        dvc(root, "queue", "stop", check=False)
    for name, state in status.items():
        assert state == "Success", f"experiment {name}: {state}\n{dvc(root, 'queue', 'logs', name, check=False).stdout[-3000:]}"


def all_runs(client) -> list:
    """Every run of the ``seqlab`` experiment."""
    (experiment,) = [e.experiment_id for e in client.search_experiments() if e.name == "seqlab"]
    return client.search_runs([experiment], max_results=5000)


def tracked_state(client) -> dict:
    """What the store holds, comparable across stores: each pipeline's stage runs and their status, how
    many registered versions there are of each model's files, and each task's champion (its files)."""
    from collections import Counter

    every = all_runs(client)
    names = {run.info.run_id: run.data.tags.get("dvc.exp_name", "repro") for run in every
             if run.data.tags.get("seqlab.run_kind") == "pipeline"}
    stages = Counter((names.get(run.data.tags.get("mlflow.parentRunId"), "?"), run.info.run_name, run.info.status)
                     for run in every if run.data.tags.get("seqlab.run_kind") == "stage")
    versions, champions = Counter(), {}
    for model in client.search_registered_models("name LIKE 'seqlab-%'"):
        for version in client.search_model_versions(f"name = '{model.name}'"):
            versions[(model.name, version.tags.get("model_hash"))] += 1
        if "champion" in model.aliases:
            holder = client.get_model_version(model.name, model.aliases["champion"])
            task = holder.tags.get("task")
            assert task not in champions, f"two {task} champions: {champions[task]} and {model.name}"
            champions[task] = (model.name, holder.tags.get("model_hash"))
    return {"pipelines": Counter(names.values()), "stages": stages, "versions": versions, "champions": champions}


def gate_outcomes(client) -> dict[str, tuple[str, tuple[str, str], float]]:
    """Each experiment's language-model gate: its outcome (promoted | challenger | kept), the candidate
    (registered model, files) and the candidate's test perplexity."""
    every = all_runs(client)
    names = {run.info.run_id: run.data.tags["dvc.exp_name"] for run in every if "dvc.exp_name" in run.data.tags}
    gates = {}
    for run in every:
        if run.info.run_name == "register" and run.data.tags.get("mlflow.parentRunId") in names:
            name, version = run.data.params["candidate"].split()[:2]  # "seqlab-ngram v11 (ngram-jm-3)"
            tags = client.get_model_version(name, version.removeprefix("v")).tags
            gates[names[run.data.tags["mlflow.parentRunId"]]] = (
                run.data.tags["seqlab.gate"].partition(":")[0], (name, tags["model_hash"]), float(tags["test_ppl"]))
    return gates


def in_turn(scores: dict[str, float], order, champion: float = math.inf) -> dict[str, str]:
    """The gate's outcomes for candidates of these test ``scores`` gated one after the other in
    ``order``, from a champion at ``champion``."""
    outcomes, best = {}, champion
    for name in order:
        outcomes[name] = "promoted" if scores[name] < best else "challenger"
        best = min(best, scores[name])
    return outcomes


def in_turn_and_at_once(store) -> None:
    """``EXPERIMENTS`` queued on two copies of a built project, each from a weak champion, and run by
    ``dvc queue start -j 1`` on one and ``-j 2`` on the other: both finish, with the same runs, the same
    versions and the same champion, and each gate decided as one of the two orders in turn would.
    ``store(jobs)`` is a context manager giving a copy's root, its tracking URI, and the environment
    variables that point at it (none for the default store)."""
    from collections import Counter

    from seqlab.registry import find_version

    states, gates = {}, {}
    for jobs in (1, 2):
        with store(jobs) as (root, uri, extra):
            commit(root, "baseline")
            client = client_of(uri)
            weak = find_version(client, "seqlab-ngram", root / "models" / "ngram" / "mle-1")
            crown(client, weak.name, weak.version)
            before = tracked_state(client)
            run_queue(root, jobs, extra)
            states[jobs], gates[jobs] = tracked_state(client), gate_outcomes(client)
    serial, parallel = states[1], states[2]
    assert serial["pipelines"] == before["pipelines"] + Counter(list(EXPERIMENTS))  # one parent run each
    assert {status for (_, _, status) in serial["stages"]} == {"FINISHED"}
    assert {(exp, stage) for (exp, stage, _) in serial["stages"]} >= {
        (exp, stage) for exp in EXPERIMENTS for stage in ("hybrid", "evaluate", "register")}
    first, second = EXPERIMENTS
    assert gates[1][first][1] != gates[1][second][1]  # two different models compete
    scores = {name: gate[2] for name, gate in gates[1].items()}
    assert {name: gate[0] for name, gate in gates[1].items()} == in_turn(scores, [first, second])
    assert serial["champions"]["lm"] == min(gates[1].values(), key=lambda gate: gate[2])[1]
    assert parallel == serial  # nothing lost or counted twice, and the same champion
    outcomes, scores = {name: gate[0] for name, gate in gates[2].items()}, {name: gate[2] for name, gate in gates[2].items()}
    assert outcomes in (in_turn(scores, [first, second]), in_turn(scores, [second, first]))  # took turns
