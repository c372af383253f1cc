"""A real tracking server: `mlflow server` on 127.0.0.1 with PostgreSQL behind it and a local artifact
root, the tiny pipeline tracked through HTTP, and two experiments at once against it."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest

from helpers import client_of, copy_project, dvc, free_port, in_turn_and_at_once, make_project, tracked_state
from seqlab import ui
from seqlab.io import dvc_md5

pytestmark = pytest.mark.slow


class Postgres:
    """A PostgreSQL server of the tests' own on 127.0.0.1, in a temporary folder (run as the
    ``postgres`` user when the tests run as root, which PostgreSQL refuses)."""

    def __init__(self, bin_dir: Path):
        self.bin = bin_dir
        self.folder = Path(tempfile.mkdtemp(prefix="seqlab-postgres-"))
        self.owner = []
        if os.getuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
            self.owner = ["runuser", "-u", "postgres", "--"]
        self.port = free_port()
        self.data = self.folder / "data"
        self._run("initdb", "-D", str(self.data), "-U", "seqlab", "--auth=trust", "-E", "UTF8")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "-t", "60",
                  "-o", f"-h 127.0.0.1 -p {self.port} -k {self.folder} -F", "start")

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run([*self.owner, str(self.bin / tool), *args], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"{tool} failed:\n{result.stdout}\n{result.stderr}"

    def url(self, database: str) -> str:
        return f"postgresql://seqlab@127.0.0.1:{self.port}/{database}"

    def sql(self, statement: str, database: str = "postgres") -> list[tuple]:
        import psycopg

        with psycopg.connect(self.url(database), autocommit=True) as connection:  # CREATE DATABASE refuses a transaction
            cursor = connection.execute(statement)
            return cursor.fetchall() if cursor.description else []

    def stop(self) -> None:
        with contextlib.suppress(AssertionError):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres():
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl")) or ([Path(shutil.which("pg_ctl"))] if shutil.which("pg_ctl") else [])
    if not found:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL is not installed; .ci/run installs it with apt-get")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql); CI runs these tests")
    server = Postgres(found[-1].parent)
    yield server
    server.stop()


@contextlib.contextmanager
def tracking_server(backend: str, artifacts: Path):
    """``mlflow server`` on 127.0.0.1 with ``backend`` as its store and ``artifacts`` as its artifact
    root (served through it, so clients upload over HTTP); yields its URL."""
    port = free_port()
    server = ui.serve(backend, port, log=artifacts.parent / f"mlflow-server-{port}.log", timeout=120,
                      options=("--artifacts-destination", str(artifacts)))
    try:
        yield f"http://{ui.HOST}:{port}"
    finally:
        ui.stop(server)


@dataclass
class Served:
    root: Path
    database: str
    artifacts: Path


@pytest.fixture(scope="module")
def served(postgres, tmp_path_factory) -> Served:
    """The tiny project's `dvc repro`, tracked by a server on PostgreSQL, then committed."""
    folder = tmp_path_factory.mktemp("served")
    postgres.sql("CREATE DATABASE tracking")
    artifacts = folder / "artifacts"
    root = make_project(Path(tmp_path_factory.mktemp("project")), validate__max_oov_rate=0.5)
    with tracking_server(postgres.url("tracking"), artifacts) as url:
        dvc(root, "repro", extra={"MLFLOW_TRACKING_URI": url})
    return Served(root, "tracking", artifacts)


def test_the_pipeline_tracks_runs_versions_and_champions_on_a_server_with_postgresql(postgres, served, tmp_path):
    import mlflow

    with tracking_server(postgres.url(served.database), served.artifacts) as url:
        client = client_of(url)
        state = tracked_state(client)
        assert state["pipelines"] == {"repro": 1}
        stages = {stage for (_, stage, _) in state["stages"]}
        assert {"prepare", "tokenize", "vocab", "validate", "ngram mkn-3", "tune", "train lstm-dot", "hybrid", "evaluate", "pairs",
                "seq2seq_tune", "seq2seq attention", "seq2seq_evaluate", "register"} <= stages
        assert {status for (_, _, status) in state["stages"]} == {"FINISHED"}
        assert set(state["versions"].values()) == {1}  # each model's files registered once
        board = pd.read_csv(served.root / "metrics" / "leaderboard.csv")
        assert {name for (name, _) in state["versions"]} >= set(board.registered_model)
        best = board.iloc[0]
        assert state["champions"]["lm"] == (best.registered_model, dvc_md5(served.root / best.path))
        pairs = pd.read_csv(served.root / "metrics" / "seq2seq" / "leaderboard.csv").sort_values(["valid_wer", "model"]).iloc[0]
        assert state["champions"]["seq2seq"] == (f"seqlab-seq2seq_{pairs.attention}", dvc_md5(served.root / pairs.path))
        # the champion's files come back from the server's artifact root
        mlflow.set_tracking_uri(url)
        downloaded = Path(mlflow.artifacts.download_artifacts(f"models:/{best.registered_model}@champion", dst_path=str(tmp_path)))
        assert (downloaded / "MLmodel").exists()
        seen = len(client.search_runs([client.get_experiment_by_name("seqlab").experiment_id], max_results=5000))
    # what the server stored is in PostgreSQL
    assert postgres.sql("SELECT count(*) FROM runs", served.database)[0][0] == seen > sum(state["stages"].values())
    assert postgres.sql("SELECT count(*) FROM model_versions", served.database)[0][0] == sum(state["versions"].values())
    assert sorted(a for (a,) in postgres.sql("SELECT alias FROM registered_model_aliases", served.database)) == ["champion", "champion"]
    assert not (served.root / "mlruns" / "mlflow.db").exists()  # nothing tracked locally


def test_two_experiments_at_once_on_the_server_lose_nothing_and_gate_as_in_turn(postgres, served, tmp_path):
    """`dvc exp run --queue` twice and `dvc queue start -j 2` against the server, compared with `-j 1`;
    each on a copy of the served project's store (a database made from it, its artifacts copied)."""

    @contextlib.contextmanager
    def server(jobs):
        database = f"jobs_{jobs}"
        postgres.sql(f"CREATE DATABASE {database} TEMPLATE {served.database}")
        artifacts = shutil.copytree(served.artifacts, tmp_path / f"artifacts-{jobs}")
        root = copy_project(served.root, tmp_path / f"jobs-{jobs}")
        with tracking_server(postgres.url(database), artifacts) as url:
            yield root, url, {"MLFLOW_TRACKING_URI": url}

    in_turn_and_at_once(server)
