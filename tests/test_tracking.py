import errno
import os

import pytest

from seqlab.tracking import flatten, stage_run

PARAMS = {"vocab": {"min_freq": 2, "max_size": None}, "tracking": {"experiment": "t"}}


@pytest.fixture
def root(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("SEQLAB_PIPELINE_KEY", "test-pipeline")
    return tmp_path


def all_runs(uri):
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["t"], order_by=["attributes.start_time ASC"])


def test_stages_of_one_pipeline_share_a_parent(root):
    with stage_run("first", "t", {"vocab": PARAMS["vocab"]}, PARAMS) as run:
        run.log_metrics({"size": 3})
        (root / "out.txt").write_text("x")
        run.log_artifact(root / "out.txt")
        run.tag_data_hashes("outs", [root / "out.txt"])
    with stage_run("second", "t", {}, PARAMS):
        pass
    frame = all_runs(f"sqlite:///{root}/mlruns/mlflow.db")
    assert list(frame["tags.mlflow.runName"].iloc[1:]) == ["first", "second"]
    parent = frame.iloc[0]
    assert parent["tags.seqlab.pipeline_key"] == "test-pipeline" and parent["status"] == "FINISHED"
    assert set(frame["tags.mlflow.parentRunId"].iloc[1:]) == {parent["run_id"]}
    assert parent["params.vocab.min_freq"] == "2" and parent["params.tracking.experiment"] == "t"
    first = frame.iloc[1]
    assert first["metrics.size"] == 3 and first["params.vocab.max_size"] == "None"
    assert first["tags.dvc.outs.out.txt"] == "9dd4e461268c8034f5c8564e155c67a6"  # md5 of "x"
    assert (root / "mlruns" / "artifacts").is_dir()


def test_a_failing_stage_fails_its_run_and_the_parent(root):
    with pytest.raises(RuntimeError, match="boom"):
        with stage_run("broken", "t", {}, PARAMS):
            raise RuntimeError("boom")
    frame = all_runs(f"sqlite:///{root}/mlruns/mlflow.db")
    assert list(frame["status"]) == ["FAILED", "FAILED"]


def test_tracking_uri_from_the_environment(root, tmp_path_factory, monkeypatch):
    elsewhere = tmp_path_factory.mktemp("server")
    uri = f"sqlite:///{elsewhere}/store.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with stage_run("first", "t", {}, PARAMS):
        pass
    assert len(all_runs(uri)) == 2
    assert not (root / "mlruns").exists()


def test_flatten():
    assert flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None}) == {"a.b": "1", "a.c.d": "[1, 2]", "e": "None"}


def test_a_tracking_server_that_is_down_is_one_line_without_its_password(monkeypatch):
    import socket

    from seqlab.errors import SeqLabError
    from seqlab.tracking import HTTP_BOUNDS, connect

    for key in HTTP_BOUNDS:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "7")  # set by the user: kept
    with socket.socket() as closed:  # bound, not listening: refuses connections
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ci:s3cret@127.0.0.1:{port}/mlflow")
        with pytest.raises(SeqLabError) as err:
            connect()
    assert str(err.value) == (f"MLFLOW_TRACKING_URI: the tracking server http://127.0.0.1:{port}/mlflow does not answer "
                              "(Connection refused); start it, or unset MLFLOW_TRACKING_URI to track in mlruns/")
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "7" and os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "2"


@pytest.mark.parametrize("code, words", [(errno.EROFS, "Read-only file system"), (errno.ENOSPC, "No space left on device")])
def test_a_local_store_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, code, words):
    """Before MLflow is touched: SQLite on a read-only or full disk otherwise fails after pages of retries."""
    from seqlab.errors import SeqLabError
    from seqlab.tracking import connect

    def refused(fd):
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(os, "fsync", refused)
    with pytest.raises(SeqLabError) as err:
        connect(tmp_path)
    assert str(err.value) == (f"{tmp_path / 'mlruns'}: the tracking store cannot be written here ({words}); "
                              "free space or make it writable, or set MLFLOW_TRACKING_URI to another store")


def test_runs_a_killed_pipeline_left_running_are_marked_killed(tmp_path):
    import socket
    import subprocess
    import sys

    import psutil
    from mlflow import MlflowClient

    from seqlab.tracking import PIPELINE_KEY_TAG, close_abandoned

    def key(process: psutil.Process) -> str:
        return f"{socket.gethostname()}:{process.pid}:{int(process.create_time() * 1000)}"

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    dead_key = key(psutil.Process(gone.pid))
    gone.wait()
    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("t")

    def run(pipeline_key=None, parent=None):
        tags = {"seqlab.run_kind": "pipeline", PIPELINE_KEY_TAG: pipeline_key} if pipeline_key else {"mlflow.parentRunId": parent}
        return client.create_run(experiment, tags=tags).info.run_id

    dead = run(dead_key)
    stage = run(parent=dead)
    trial = run(parent=stage)
    live = run(key(psutil.Process()))  # this process: a pipeline still running
    live_stage = run(parent=live)
    by_hand = run("ci-nightly")  # SEQLAB_PIPELINE_KEY: cannot be told, left alone
    assert sorted(close_abandoned(client, experiment)) == sorted([dead, stage, trial])
    status = {r: client.get_run(r).info.status for r in (dead, stage, trial, live, live_stage, by_hand)}
    assert status == {dead: "KILLED", stage: "KILLED", trial: "KILLED", live: "RUNNING", live_stage: "RUNNING", by_hand: "RUNNING"}


def test_a_failed_stage_puts_the_last_good_outputs_back(root, monkeypatch):
    """DVC leaves outputs in place (persist); a stage that fails after writing some puts the earlier
    ones back and removes what it added; one that succeeds replaces them."""
    import json

    from helpers import REPO
    from seqlab import stage
    from seqlab.config import load_params
    from seqlab.io import atomic_path, write_json

    monkeypatch.chdir(root)
    params = load_params(REPO / "params.yaml")
    (root / "model").mkdir()
    (root / "model" / "a.bin").write_bytes(b"old")
    write_json("metrics.json", {"ppl": 1.0})
    untouched = (root / "metrics.json").stat().st_ino

    def write_new():
        with atomic_path("model") as tmp:
            tmp.mkdir()
            (tmp / "b.bin").write_bytes(b"new")
        write_json("added.json", {})

    with pytest.raises(RuntimeError, match="refused input"):
        with stage.tracked("x", params, "vocab", outs=("model", "metrics.json", "added.json")):
            write_new()
            raise RuntimeError("refused input")
    assert sorted(p.name for p in (root / "model").iterdir()) == ["a.bin"] and (root / "model" / "a.bin").read_bytes() == b"old"
    assert not (root / "added.json").exists() and (root / "metrics.json").stat().st_ino == untouched
    assert list((root / ".seqlab" / "kept").iterdir()) == []

    with stage.tracked("x", params, "vocab", outs=("model", "metrics.json", "added.json")):
        write_new()
    assert sorted(p.name for p in (root / "model").iterdir()) == ["b.bin"] and (root / "added.json").exists()
    assert json.loads((root / "metrics.json").read_text()) == {"ppl": 1.0}
    assert list((root / ".seqlab" / "kept").iterdir()) == []


def test_pipelines_started_at_once_on_a_new_local_store_all_record_their_runs(tmp_path):
    """`dvc queue start -j 2` on a fresh clone: several stages open a store that does not exist yet;
    MLflow creates its tables on first use, and without a lock the second creator fails."""
    import subprocess
    import sys

    script = "from seqlab.tracking import stage_run\nwith stage_run('s', 't', {'a': 1}, {'a': 1}):\n    pass\n"
    children = []
    for number in range(4):
        environment = {**os.environ, "DVC_ROOT": str(tmp_path), "SEQLAB_PIPELINE_KEY": f"queue-{number}"}
        children.append(subprocess.Popen([sys.executable, "-c", script], env=environment, stderr=subprocess.PIPE, text=True))
    errors = [child.communicate(timeout=300)[1] for child in children]
    assert [child.returncode for child in children] == [0] * 4, "\n".join(errors)
    frame = all_runs(f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}")
    assert len(frame) == 8 and set(frame.status) == {"FINISHED"}  # 4 pipelines, a stage each
