"""Faults survived: divergence, a tracking server that is gone, kill -9 under `dvc repro`, reruns.

Kill -9 inside fit() and a crashing Ray trial are in test_train.py and test_tune.py.
"""

import json
import math
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
import torch

from seqlab.errors import SeqLabError
from seqlab.io import md5_file
from seqlab.models.checkpoint import load_checkpoint
from helpers import BIN, CONFIG, PASS, SCORED, TRAIN, TRAIN_IDS, VALID_IDS, comparable, dvc, env, make_project, run, runs, with_train
from seqlab.models import build
from seqlab.training import fit
from seqlab.training.lm import LanguageModelTask

ONE_LINE = "training diverged: the training loss is {value} at step 115 of 225 (lr {lr}); nothing saved after it"


def poisoned(model, value: float, at_call: int):
    """``model`` whose training loss becomes ``value`` on the ``at_call``-th forward of the output layer."""
    original, calls = model.output.target_log_probs, [0]

    def target_log_probs(features, targets):
        calls[0] += model.training  # training steps only, not scoring valid
        out = original(features, targets)
        return out + value if model.training and calls[0] == at_call else out

    model.output.target_log_probs = target_log_probs
    return model


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_a_diverging_loss_stops_training_and_keeps_the_last_good_checkpoints(tmp_path, value):
    torch.manual_seed(TRAIN.seed)
    model = poisoned(build(CONFIG), -value, 75 + 40)  # a round has 75 steps: step 40 of round 2
    with pytest.raises(SeqLabError) as err:
        fit(model, LanguageModelTask(TRAIN_IDS, VALID_IDS, SCORED, "vocab-hash"), TRAIN, tmp_path, "run-1", progress=False)
    message = str(err.value)
    lr = 0.01 * 0.5 * (1 + math.cos(math.pi * 114 / 225))  # the cosine after 114 steps
    assert message.startswith(ONE_LINE.format(value=value, lr=f"{lr:.3g}")) and "\n" not in message
    assert f"{tmp_path / 'last.pt'} (step 112), {tmp_path / 'best.pt'} (best, round 1)" in message
    assert message.endswith("the same settings diverge again: lower the learning rate (params.yaml: train.lr, "
                            "or the search's pick in models/tune/best_config.json) or train.clip")

    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["step"] == 112  # the last multiple of checkpoint_every (7) before step 115
    assert all(torch.isfinite(t).all() for t in saved["model"].values())
    assert load_checkpoint(tmp_path / "best.pt", "vocab-hash") is not None

    # the kept checkpoint is one to go on from: resuming ends where an undisturbed run ends
    _, resumed = run(tmp_path)
    _, straight = run(tmp_path / "straight")
    assert resumed.resumed_from == "step 112"
    assert comparable(resumed.history) == comparable(straight.history)


def test_weights_that_stop_being_finite_are_never_checkpointed(tmp_path, monkeypatch):
    step, steps = torch.optim.Adam.step, [0]

    def poisoning(self, *args, **kwargs):  # step 7 (the first checkpoint) leaves an infinite weight
        out = step(self, *args, **kwargs)
        steps[0] += 1
        if steps[0] == 7:
            with torch.no_grad():
                self.param_groups[0]["params"][0].view(-1)[0] = math.inf
        return out

    monkeypatch.setattr(torch.optim.Adam, "step", poisoning)
    with pytest.raises(SeqLabError, match=r"weight \S+ is not finite at step 7 of 225 .*the last good checkpoints stay: none"):
        run(tmp_path)
    assert not (tmp_path / "last.pt").exists() and not (tmp_path / "best.pt").exists()


def test_a_valid_loss_that_is_not_finite_stops_training_before_the_round_is_saved(tmp_path, monkeypatch):
    monkeypatch.setattr("seqlab.training.lm.valid_loss", lambda *args: math.nan)
    with pytest.raises(SeqLabError) as err:
        run(tmp_path)
    assert str(err.value).startswith(f"training diverged: the valid loss is nan at step 75 of 225 (lr {0.01 * 0.5 * (1 + math.cos(math.pi / 3)):.3g}); nothing saved after "
                                     f"it, the last good checkpoints stay: {tmp_path / 'last.pt'} (step 70); ")
    assert not (tmp_path / "best.pt").exists()  # the end-of-round saves never happened


def test_same_params_and_seed_train_to_identical_metrics_and_weights(tmp_path):
    _, first = run(tmp_path / "a", cfg=with_train(tokens=2 * PASS))
    _, second = run(tmp_path / "b", cfg=with_train(tokens=2 * PASS))
    assert comparable(first.history) == comparable(second.history) and first.best_valid_ppl == second.best_valid_ppl
    assert md5_file(tmp_path / "a" / "best.pt") == md5_file(tmp_path / "b" / "best.pt")


# --- the tracking server -----------------------------------------------------------------------------




def repro_against(root: Path, uri: str, *args: str, **environment: str) -> tuple[subprocess.CompletedProcess, float]:
    started = time.perf_counter()
    result = subprocess.run([str(BIN / "dvc"), "repro", *args], cwd=root, env={**env(), "MLFLOW_TRACKING_URI": uri, **environment},
                            capture_output=True, text=True, timeout=300)
    return result, time.perf_counter() - started


def errors(result: subprocess.CompletedProcess) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


@pytest.mark.slow
def test_an_unreachable_tracking_server_is_one_line_in_seconds_with_nothing_written(tmp_path):
    root = make_project(tmp_path)
    with socket.socket() as closed:  # bound, not listening: the port stays ours and refuses connections
        closed.bind(("127.0.0.1", 0))
        uri = f"http://127.0.0.1:{closed.getsockname()[1]}"
        result, seconds = repro_against(root, uri, "prepare")
    assert result.returncode != 0 and seconds < 60
    assert errors(result) == [f"error: MLFLOW_TRACKING_URI: the tracking server {uri} does not answer (Connection refused); "
                              "start it, or unset MLFLOW_TRACKING_URI to track in mlruns/"], result.stderr
    assert not (root / "data" / "prepared").exists() and not (root / "mlruns").exists()


@pytest.mark.slow
def test_a_tracking_server_that_never_answers_gives_up_within_its_bound(tmp_path):
    root = make_project(tmp_path)
    with socket.socket() as silent:  # accepts connections (the kernel does), never answers a request
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        # the variables win over the stage's own bounds (3 tries of 30 s): here 3 tries of 4 s, 1 + 2 s apart
        result, seconds = repro_against(root, uri, "prepare", MLFLOW_HTTP_REQUEST_TIMEOUT="4")
    assert result.returncode != 0
    assert 12 < seconds < 60, seconds  # plus DVC and Python starting
    (line,) = errors(result)
    assert line.startswith(f"error: MLflow tracking at {uri}: ") and "get-by-name" in line, result.stderr
    assert not (root / "data" / "prepared").exists()


def test_a_tracking_failure_after_the_outputs_were_written_removes_them(tmp_path, monkeypatch, capsys):
    from mlflow.exceptions import MlflowException

    import seqlab.tracking

    root = make_project(tmp_path)
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root / "pipelines"))
    import prepare

    def gone(self, path, *args, **kwargs):
        assert Path(path).exists()  # the stage wrote its output before logging it
        raise MlflowException("API request to http://tracking:5000/api/2.0/mlflow-artifacts/artifacts failed: Connection refused")

    monkeypatch.setattr(seqlab.tracking.StageRun, "log_artifact", gone)
    with pytest.raises(SystemExit) as exit_:
        prepare.main()
    assert exit_.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: MLflow tracking at sqlite:///{root / 'mlruns' / 'mlflow.db'}: API request to "
                   "http://tracking:5000/api/2.0/mlflow-artifacts/artifacts failed: Connection refused"]
    assert not (root / "data" / "prepared").exists() and not list((root / "data").glob(".*.tmp"))
    frame = runs(root)
    assert set(frame["status"]) == {"FAILED"}  # the stage's run and its parent


# --- kill -9 under dvc repro -------------------------------------------------------------------------


def train_metrics(root: Path) -> tuple[dict, str]:
    metrics = json.loads((root / "metrics" / "train.json").read_text())
    metrics.pop("train_minutes")
    return metrics, md5_file(root / "models" / "neural" / "model.pt")


@pytest.mark.slow
def test_kill_9_in_training_then_dvc_repro_resumes_to_the_same_metrics(tmp_path):
    # enough text that training takes seconds, so the kill lands in the middle of it
    sentences = [f"the {a} {v} on the {b} ." for a in ("cat", "dog", "bird", "king") for v in ("sat", "ran", "slept")
                 for b in ("mat", "log", "hill", "throne", "road")]
    root = make_project(tmp_path, tune__optimization_config={}, train__tokens=4 * 9600, train__eval_every=9600, train__checkpoint_every=20,
                        train__batch_size=4, model__hidden_dim=64, model__embed_dim=64, validate__max_oov_rate=0.5)
    (root / "data" / "corpus" / "train.txt").write_text("\n".join(sentences * 20) + "\n")
    dvc(root, "repro", "tune")  # everything before training

    process = subprocess.Popen([str(BIN / "dvc"), "repro", "train"], cwd=root, env=env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    resume = root / "checkpoints" / "train" / "last.pt"
    deadline = time.monotonic() + 300
    while not resume.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)  # dvc and the stage under it, as a killed job or a lost machine
    process.wait()
    assert resume.exists() and not (root / "models" / "neural").exists(), "the kill did not land in training"
    left = runs(root)
    left = set(left[left.status == "RUNNING"].run_id)
    assert len(left) == 2  # the dead pipeline's parent run and its train stage

    resumed = dvc(root, "repro", "train")
    after = runs(root).set_index("run_id").status
    assert (after[list(left)] == "KILLED").all()  # marked by the next run, which finished
    assert not (after == "RUNNING").any()
    (line,) = [line for line in resumed.stdout.splitlines() if ": resuming from step" in line]
    print(line)  # where the kill landed: pytest -s shows it
    assert line.startswith("checkpoints/train/last.pt: resuming from step ")
    after_resume = train_metrics(root)
    assert not resume.parent.exists()  # the resume state goes once training is done

    straight = dvc(root, "repro", "-f", "-s", "train")  # --force runs the command: no run cache, no resume state
    assert "resuming" not in straight.stdout and "Running stage 'train'" in straight.stdout
    assert train_metrics(root) == after_resume
    again = dvc(root, "repro", "-f", "-s", "train")  # same params and seed once more: DVC's cache never lies
    assert "Running stage 'train'" in again.stdout and train_metrics(root) == after_resume
    assert dvc(root, "status", "train").stdout.strip().endswith("Data and pipelines are up to date.")
