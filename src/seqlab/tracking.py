"""MLflow tracking: one parent run per ``dvc repro``, one child run per stage.

DVC runs each stage in its own process, so stages find their shared parent run through a *pipeline
key*: the id of the ``dvc`` process that started them (host, pid and start time), or
``SEQLAB_PIPELINE_KEY`` when set (CI can name a run that way). A stage run outside DVC gets a parent
of its own. Tracking defaults to a SQLite store in ``mlruns/`` with artifacts beside it;
``MLFLOW_TRACKING_URI`` points elsewhere.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import warnings
from pathlib import Path
from typing import Iterator, Mapping
from urllib.parse import urlsplit

from seqlab.errors import SeqLabError
from seqlab.io import dvc_md5
from seqlab.net import unreachable

PIPELINE_KEY_TAG = "seqlab.pipeline_key"


def project_root() -> Path:
    """The DVC project root when run by DVC, else the working directory."""
    return Path(os.environ.get("DVC_ROOT") or os.getcwd()).resolve()


def local_store(root: Path) -> str:
    """The default tracking store: SQLite in ``<root>/mlruns``, artifacts in ``<root>/mlruns/artifacts``."""
    return f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or local_store(root)


# MLflow retries an HTTP request 7 times over about 4 minutes, each try waiting up to 120 s for an
# answer. A stage gives up on a tracking server that has stopped answering after 3 tries of 30 s (an
# upload the server is still storing gets that long); a server that is down fails the 5 s probe. The
# MLFLOW_HTTP_REQUEST_* variables, when set, win.
HTTP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
               "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}
# After a stage failed, marking its runs FAILED is tried once, briefly: the server may be the failure.
CLEANUP_BOUNDS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
PROBE_SECONDS = 5.0
PROBE_BYTES = 1 << 16  # what a local store's folder must take: a few of SQLite's pages


def shown(uri: str) -> str:
    """``uri`` without a user name or password in it, to print."""
    url = urlsplit(uri)
    if url.username is None and url.password is None:
        return uri
    return url._replace(netloc=url.netloc.rpartition("@")[2]).geturl()


def connect(root: Path | None = None) -> str:
    """Point MLflow at this project's store; a tracking server that does not answer is a one-line error in seconds."""
    import mlflow
    from urllib.request import getproxies, proxy_bypass

    uri = tracking_uri(root or project_root())
    url = urlsplit(uri)
    if url.scheme in ("http", "https"):
        for key, value in HTTP_BOUNDS.items():
            os.environ.setdefault(key, value)
        if not url.hostname:
            raise SeqLabError(f"MLFLOW_TRACKING_URI: {shown(uri)!r} names no host")
        proxied = url.scheme in getproxies() and not proxy_bypass(url.hostname)  # then only the proxy is reachable
        reason = None if proxied else unreachable(url.hostname, url.port or (443 if url.scheme == "https" else 80), PROBE_SECONDS)
        if reason:
            raise SeqLabError(f"MLFLOW_TRACKING_URI: the tracking server {shown(uri)} does not answer ({reason}); "
                              "start it, or unset MLFLOW_TRACKING_URI to track in mlruns/")
    elif local_folder(uri) is not None:
        writable(local_folder(uri))
    mlflow.set_tracking_uri(uri)
    return uri


def local_folder(uri: str) -> Path | None:
    """The folder a local store writes in: a SQLite file's, or a file store's; None for a server."""
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///"):]).parent
    url = urlsplit(uri)
    return Path(url.path) if url.scheme in ("file", "") else None


def writable(folder: Path) -> None:
    """A local tracking store's folder can take a write (not read-only, not full), or one line naming
    it; SQLite would otherwise fail deep inside MLflow, after many lines of retries."""
    import tempfile

    probe = folder
    while not probe.exists() and probe != probe.parent:  # the store's folder is made by the first run
        probe = probe.parent
    try:
        with tempfile.TemporaryFile(dir=probe) as handle:
            handle.write(bytes(PROBE_BYTES))
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as err:
        raise SeqLabError(f"{folder}: the tracking store cannot be written here ({err.strerror}); "
                          "free space or make it writable, or set MLFLOW_TRACKING_URI to another store") from None


@contextlib.contextmanager
def tracking_errors(uri: str) -> Iterator[None]:
    """MLflow and HTTP failures inside the block as one line naming the store."""
    from mlflow.exceptions import MlflowException
    from requests.exceptions import RequestException
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except (MlflowException, RequestException, SQLAlchemyError) as err:  # a database's: "database or disk is full"
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SeqLabError(f"MLflow tracking at {shown(uri)}: {first[:400]}") from err


@contextlib.contextmanager
def _environment(values: Mapping[str, str]) -> Iterator[None]:
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def pipeline_key() -> str:
    """Equal for every stage of one ``dvc repro`` / ``dvc exp run``, different for the next one."""
    if os.environ.get("SEQLAB_PIPELINE_KEY"):
        return os.environ["SEQLAB_PIPELINE_KEY"]
    import psutil

    anchor = psutil.Process()
    for process in anchor.parents():
        try:
            args = process.cmdline()
        except (psutil.AccessDenied, psutil.NoSuchProcess):
            continue
        if any(Path(arg).name == "dvc" for arg in args[:3]) or args[1:3] == ["-m", "dvc"]:
            anchor = process
            break
    return f"{socket.gethostname()}:{anchor.pid}:{int(anchor.create_time() * 1000)}"


def git_commit() -> str | None:
    """The commit of the workspace a stage runs in (DVC runs it there; a queued experiment's workspace
    is a copy of its own, at its baseline commit), or None outside git."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def flatten(params: Mapping, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = str(value)
    return flat


class StageRun:
    """What a stage logs: params, metrics, artifacts, dataset inputs and DVC data hashes."""

    def __init__(self, mlflow, run_id: str, root: Path):
        self._mlflow, self.run_id, self._root = mlflow, run_id, root

    def children(self, kind: str) -> "ChildRuns":
        """Runs of ``kind`` (a search's trials) logged as children of this one, from any thread."""
        client = self._mlflow.MlflowClient()
        return ChildRuns(client, client.get_run(self.run_id).info.experiment_id, self.run_id, kind)

    def set_tag(self, key: str, value: str) -> None:
        self._mlflow.set_tag(key, value)

    def log_params(self, params: Mapping) -> None:
        self._mlflow.log_params(flatten(params))

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        self._mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None, compress: bool = False) -> None:
        """Log a file or directory; ``compress`` logs a gzipped copy of a file (ARPA text packs ~4x)."""
        path = Path(path)
        if compress:
            import gzip
            import shutil
            import tempfile

            with tempfile.TemporaryDirectory() as tmp, open(path, "rb") as src:
                packed = Path(tmp) / f"{path.name}.gz"
                with gzip.open(packed, "wb", compresslevel=3) as dst:
                    shutil.copyfileobj(src, dst)
                self._mlflow.log_artifact(str(packed), artifact_path)
        elif path.is_dir():
            self._mlflow.log_artifacts(str(path), artifact_path or path.name)
        else:
            self._mlflow.log_artifact(str(path), artifact_path)

    def log_dataset(self, frame, name: str, source: str | Path, context: str) -> None:
        """Record a table the stage read (or wrote) as an MLflow dataset input."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            dataset = self._mlflow.data.from_pandas(frame, source=str(source), name=name)
            self._mlflow.log_input(dataset, context=context)

    def log_pyfunc_model(
        self, artifacts: Mapping[str, str], registered_name: str, input_example, params: Mapping, tags: Mapping[str, str],
        code: str = "pyfunc_model.py",
    ) -> str:
        """Log a pyfunc model from code (``seqlab/<code>``: ``pyfunc_model.py`` for a language model,
        ``pyfunc_transducer.py`` for an encoder-decoder; nothing pickled) over ``artifacts``
        with the seqlab package beside it, register a new version of ``registered_name`` with ``tags``,
        and return the version number. torch is a requirement only where a ``.pt`` file is among the
        artifacts (a neural model, or a hybrid with a neural part)."""
        import seqlab
        from mlflow.models import infer_signature
        from mlflow.pyfunc import log_model

        requirements = ["numpy", "pandas", "pyyaml", "pydantic"]
        if any(str(path).endswith(".pt") for path in artifacts.values()):
            import torch

            requirements.append(f"torch=={torch.__version__.split('+')[0]}")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            signature = infer_signature(input_example, params=dict(params))
            info = log_model(
                name="model",
                python_model=str(Path(seqlab.__file__).parent / code),
                artifacts=dict(artifacts),
                code_paths=[str(Path(seqlab.__file__).parent)],
                signature=signature,
                pip_requirements=requirements,
                registered_model_name=registered_name,
            )
        client = self._mlflow.MlflowClient()
        version = str(info.registered_model_version)
        for key, value in tags.items():
            client.set_model_version_tag(registered_name, version, key, value)
        return version

    def tag_data_hashes(self, kind: str, paths: list[str | Path]) -> None:
        """Tag ``dvc.<kind>.<path>`` with the hash DVC records for it (``kind`` is deps or outs)."""
        tags = {}
        for path in map(Path, paths):
            if path.exists():
                name = path.resolve().relative_to(self._root).as_posix() if path.resolve().is_relative_to(self._root) else path.name
                tags[f"dvc.{kind}.{name}"] = dvc_md5(path)
        self._mlflow.set_tags(tags)


class ChildRuns:
    """Child runs of a stage's run, created and ended through the client (a search's driver logs its
    trials this way while Ray runs them): each inherits the stage's git commit."""

    def __init__(self, client, experiment_id: str, parent_run_id: str, kind: str):
        self.client, self.experiment_id, self.parent_run_id, self.kind = client, experiment_id, parent_run_id, kind
        self._inherited = {k: v for k, v in client.get_run(parent_run_id).data.tags.items() if k == "mlflow.source.git.commit"}

    def start(self, name: str, params: Mapping[str, object], tags: Mapping[str, str]) -> str:
        from mlflow.entities import Param

        run = self.client.create_run(self.experiment_id, run_name=name[:250], tags={
            **self._inherited, "mlflow.parentRunId": self.parent_run_id, "seqlab.run_kind": self.kind, **tags})
        self.client.log_batch(run.info.run_id, params=[Param(k, str(v)) for k, v in params.items()])
        return run.info.run_id

    def log_metrics(self, run_id: str, metrics: Mapping[str, float], step: int = 0) -> None:
        from mlflow.entities import Metric

        stamp = int(time.time() * 1000)
        self.client.log_batch(run_id, metrics=[Metric(name, float(value), stamp, step) for name, value in metrics.items()])

    def set_tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def end(self, run_id: str, status: str) -> None:
        self.client.set_terminated(run_id, status)


@contextlib.contextmanager
def exclusive(name: str, uri: str | None = None) -> Iterator[None]:
    """One process at a time on this machine through the block, among those using the store ``uri``
    (this project's by default).

    The lock is a file: beside a local store (``mlruns/.<name>.lock``), else one per store and user in
    the system's temporary folder. Experiments run at once (``dvc queue start -j 2``) all run on the
    machine that queued them, so they take turns; processes on other machines are not held back.
    """
    import fcntl
    import hashlib
    import tempfile

    uri = uri or tracking_uri(project_root())
    folder = local_folder(uri) if uri.startswith("sqlite:///") else None
    if folder is None:
        folder = Path(tempfile.gettempdir()) / f"seqlab-locks-{os.getuid()}"
        name = f"{name}-{hashlib.sha256(uri.encode()).hexdigest()[:16]}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f".{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _first_use(uri: str) -> contextlib.AbstractContextManager:
    """One process at a time through a local SQLite store's first use: MLflow creates its tables
    then, and two experiments started at once on a new store would both try
    (``table ... already exists``)."""
    return exclusive("init", uri) if uri.startswith("sqlite:///") else contextlib.nullcontext()


def _experiment_id(client, name: str, artifacts: str | None) -> str:
    from mlflow.exceptions import MlflowException

    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifacts)
    except MlflowException as err:  # another pipeline created it meanwhile
        if err.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return client.get_experiment_by_name(name).experiment_id


def alive(key: str) -> bool:
    """Whether the process a pipeline key names (``host:pid:start ms``) still runs; a key of another
    host, or one set by hand (``SEQLAB_PIPELINE_KEY``), counts as alive: it cannot be told here."""
    import psutil

    parts = key.split(":")
    if len(parts) != 3 or parts[0] != socket.gethostname() or not (parts[1].isdigit() and parts[2].isdigit()):
        return True
    try:
        return int(psutil.Process(int(parts[1])).create_time() * 1000) == int(parts[2])
    except psutil.NoSuchProcess:
        return False


def close_abandoned(client, experiment_id: str) -> list[str]:
    """Mark KILLED the runs that a pipeline killed on this machine (``kill -9``) left RUNNING: its parent
    run and every run under it. Returns their ids."""
    closed = []
    pipelines = client.search_runs([experiment_id], filter_string="attributes.status = 'RUNNING' and tags.`seqlab.run_kind` = 'pipeline'")
    for run in pipelines:
        if alive(run.data.tags.get(PIPELINE_KEY_TAG, "")):
            continue
        level = [run.info.run_id]
        while level:  # the stages' runs, then the search's trials under them
            closed += level
            level = [child.info.run_id for parent in level for child in client.search_runs(
                [experiment_id], filter_string=f"attributes.status = 'RUNNING' and tags.`mlflow.parentRunId` = '{parent}'")]
    for run_id in closed:
        client.set_terminated(run_id, "KILLED")
    return closed


def _parent_run(client, experiment_id: str, all_params: Mapping, tags: Mapping[str, str]) -> str:
    key = pipeline_key()
    close_abandoned(client, experiment_id)
    found = client.search_runs(
        [experiment_id], filter_string=f"tags.`{PIPELINE_KEY_TAG}` = '{key}'", max_results=1
    )
    if found:
        run_id = found[0].info.run_id
        client.update_run(run_id, status="RUNNING")
        return run_id
    tags = {**tags, PIPELINE_KEY_TAG: key, "seqlab.run_kind": "pipeline"}
    name = f"pipeline {time.strftime('%Y-%m-%d %H:%M:%S')}"
    if os.environ.get("DVC_EXP_NAME"):  # set by `dvc exp run`
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
        name = f"exp {os.environ['DVC_EXP_NAME']}"
    from mlflow.entities import Param

    run = client.create_run(experiment_id, run_name=name, tags=tags)
    client.log_batch(run.info.run_id, params=[Param(k, v) for k, v in flatten(all_params).items()])
    return run.info.run_id


@contextlib.contextmanager
def stage_run(stage: str, experiment: str, params: Mapping, all_params: Mapping) -> Iterator[StageRun]:
    """A child run named after ``stage`` under this pipeline's parent run.

    ``params`` is the stage's slice of params.yaml (logged on the child), ``all_params`` the whole file
    (logged once on the parent). A failing stage marks both runs FAILED.
    """
    import logging

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # stage logs stay readable
    import mlflow
    from mlflow import MlflowClient

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    root = project_root()
    uri = connect(root)
    with tracking_errors(uri):
        artifacts = None  # a tracking server decides where artifacts go
        if uri == local_store(root):
            (root / "mlruns").mkdir(exist_ok=True)
            artifacts = (root / "mlruns" / "artifacts").as_uri()
        with _first_use(uri):
            client = MlflowClient()
            experiment_id = _experiment_id(client, experiment, artifacts)
        commit = git_commit()
        tags = {"mlflow.source.git.commit": commit} if commit else {}
        with exclusive("parent", uri):  # models trained side by side each find the one parent, or one makes it
            parent = _parent_run(client, experiment_id, all_params, tags)
        tags |= {"seqlab.stage": stage, "seqlab.run_kind": "stage"}
        run = mlflow.start_run(experiment_id=experiment_id, run_name=stage, parent_run_id=parent, tags=tags)
    status = "FAILED"
    try:
        with tracking_errors(uri):
            mlflow.log_params(flatten(params))
            yield StageRun(mlflow, run.info.run_id, root)
        status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        with contextlib.nullcontext() if status == "FINISHED" else _environment(CLEANUP_BOUNDS):
            try:
                mlflow.end_run(status)
                client.set_terminated(parent, status)
            except Exception:
                if status == "FINISHED":
                    with tracking_errors(uri):
                        raise
                # the stage's own error is the one to show; a store that is gone cannot mark the runs
