"""Hyperparameter search over the neural LM: Ray Tune with ASHA, random or Optuna TPE sampling.

The space is written the way SeqLab's configuration writes it, in params.yaml (``tune``) or in a JSON
file of the same shape::

    {"name": "LSTMModelWithAttention", "epochs": 100,
     "optimization_config": {"lr": {"min": 1e-3, "max": 1e-2},          # log-uniform
                             "num_layers": {"min": 1, "max": 2},         # integer, inclusive
                             "hidden_dim": {"values": [512, 1024]}}}

A key is one of the seed's names (``lr``, ``num_layers``, ``hidden_dim``, ``embedding_dim``,
``batch_size``, ``dropout``) or any key of the ``model`` and ``train`` sections (``attention``,
``bptt``, ``dropout_rnn``, ...). ``{min, max}`` samples uniformly, log-uniformly for ``lr`` or with
``log: true``, in whole numbers where the key is a whole number; ``{values: [...]}`` picks one.

Each trial is the trainer of the ``train`` stage on the sampled configuration. It reports the valid
loss after every epoch with a checkpoint, so a trial that crashes is retried from its last epoch and
ASHA can stop the weak ones early. The driver records every trial as an MLflow child run of the
search's run.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seqlab.errors import SeqLabError
from seqlab.net import unreachable

SEED_KEYS = {  # the seed's names for the keys of params.yaml
    "lr": ("train.lr",),
    "num_layers": ("model.layers",),
    "hidden_dim": ("model.hidden_dim",),
    "embedding_dim": ("model.embed_dim",),
    "batch_size": ("train.batch_size",),
    "dropout": ("model.dropout_embed", "model.dropout_rnn", "model.dropout_out"),
}
NOT_SEARCHED = {"epochs", "device", "seed", "amp", "eval_batch_size", "checkpoint_every", "cutoffs"}
FAULT_ENV = "SEQLAB_FAULT_TRIAL_CRASH"  # a marker path: the first trial to create it crashes once (fault tests)
SPACE_FILE_KEYS = ("name", "epochs", "optimization_config")


def _searchable() -> dict[str, tuple[str, ...]]:
    from seqlab.config import ModelParams, TrainParams

    keys = dict(SEED_KEYS)
    for section, fields in (("model", ModelParams.model_fields), ("train", TrainParams.model_fields)):
        keys.update({name: (f"{section}.{name}",) for name in fields if name not in NOT_SEARCHED})
    return keys


@dataclass(frozen=True)
class Dimension:
    """One searched key: a range (``low``..``high``, maybe log-scaled) or a list of ``values``."""

    key: str
    targets: tuple[str, ...]  # the dotted params keys it sets
    values: tuple | None = None
    low: float | None = None
    high: float | None = None
    log: bool = False

    def domain(self, integer: bool):
        from ray import tune

        if self.values is not None:
            return tune.choice(list(self.values))
        if integer:
            return (tune.lograndint if self.log else tune.randint)(int(self.low), int(self.high) + 1)  # inclusive
        return (tune.loguniform if self.log else tune.uniform)(self.low, self.high)

    def candidates(self) -> list:
        """The values every sample lies between or among: checked against the params before a search."""
        return list(self.values) if self.values is not None else [self.low, self.high]


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def parse_space(space: Mapping[str, Any]) -> list[Dimension]:
    """The dimensions of an ``optimization_config`` mapping; ValueError naming the key when malformed."""
    if not isinstance(space, Mapping):
        raise ValueError("optimization_config must be a mapping of key -> {min, max} or {values}")
    known = _searchable()
    dimensions = []
    for key, spec in space.items():
        if key not in known:
            raise ValueError(f"{key}: unknown key; searchable keys: {', '.join(sorted(known))}")
        if not isinstance(spec, Mapping):
            raise ValueError(f"{key}: expected {{min, max}} or {{values: [...]}} (got {spec!r})")
        if set(spec) == {"values"}:
            values = spec["values"]
            if not isinstance(values, list) or not values:
                raise ValueError(f"{key}: values must be a non-empty list (got {values!r})")
            bad = [v for v in values if not isinstance(v, (str, int, float, bool))]
            if bad:
                raise ValueError(f"{key}: values must be numbers, strings or booleans (got {bad[0]!r})")
            dimensions.append(Dimension(key, known[key], values=tuple(values)))
        elif {"min", "max"} <= set(spec) <= {"min", "max", "log"}:
            low, high, log = spec["min"], spec["max"], spec.get("log", key == "lr")
            if not (_number(low) and _number(high)):
                raise ValueError(f"{key}: min and max must be numbers (got min {low!r}, max {high!r})")
            if low > high:
                raise ValueError(f"{key}: min {low} is above its max {high}")
            if not isinstance(log, bool):
                raise ValueError(f"{key}: log must be true or false (got {log!r})")
            if log and low <= 0:
                raise ValueError(f"{key}: a log-uniform range needs min above 0 (got {low})")
            dimensions.append(Dimension(key, known[key], low=low, high=high, log=log))
        else:
            extra = sorted(set(spec) - {"min", "max", "log", "values"})
            raise ValueError(f"{key}: unknown key {extra[0]!r}" if extra else
                             f"{key}: expected {{min, max}} or {{values: [...]}} (got keys {sorted(spec)})")
    return dimensions


@dataclass(frozen=True)
class Space:
    name: str
    epochs: int  # the most epochs a trial runs (ASHA's max_t)
    dimensions: list[Dimension]
    source: str  # where it was written, for error messages: "params.yaml: tune" or the JSON file


def load_space(tune_params, params_path: str | Path = "params.yaml") -> Space:
    """The search space of params.yaml's ``tune`` section, or of the JSON file ``tune.space_file`` names."""
    if tune_params.space_file is None:
        return Space(tune_params.name, tune_params.epochs, parse_space(tune_params.optimization_config),
                     f"{params_path}: tune.optimization_config")
    path = Path(tune_params.space_file)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SeqLabError(f"{path}: file not found (params.yaml: tune.space_file)") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise SeqLabError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise SeqLabError(f"{path}: expected an object with keys {', '.join(SPACE_FILE_KEYS)}")
    for key in raw:
        if key not in SPACE_FILE_KEYS:
            raise SeqLabError(f"{path}: {key}: unknown key; expected {', '.join(SPACE_FILE_KEYS)}")
    for key in SPACE_FILE_KEYS:
        if key not in raw:
            raise SeqLabError(f"{path}: missing key {key}")
    if not isinstance(raw["name"], str) or not raw["name"]:
        raise SeqLabError(f"{path}: name: expected a non-empty string (got {raw['name']!r})")
    if not isinstance(raw["epochs"], int) or isinstance(raw["epochs"], bool) or raw["epochs"] < 1:
        raise SeqLabError(f"{path}: epochs: expected a whole number of at least 1 (got {raw['epochs']!r})")
    if tune_params.grace_period > raw["epochs"]:
        raise SeqLabError(f"{params_path}: tune.grace_period: {tune_params.grace_period} exceeds the epochs {raw['epochs']} of {path}")
    try:
        dimensions = parse_space(raw["optimization_config"])
    except ValueError as err:
        raise SeqLabError(f"{path}: optimization_config: {err}") from None
    return Space(raw["name"], raw["epochs"], dimensions, f"{path}: optimization_config")


def apply(config: Mapping[str, Any], dimensions: list[Dimension], model: Mapping, train: Mapping) -> tuple[dict, dict]:
    """The ``model`` and ``train`` sections with a trial's sampled ``config`` (seed names) put in."""
    sections = {"model": dict(model), "train": dict(train)}
    for dim in dimensions:
        if dim.key in config:
            for target in dim.targets:
                section, name = target.split(".")
                sections[section][name] = config[dim.key]
    return sections["model"], sections["train"]


def overrides(config: Mapping[str, Any], dimensions: list[Dimension]) -> dict[str, Any]:
    """``{"train.lr": 0.004, "model.layers": 2, ...}``: what the train stage changes in params.yaml."""
    return {target: config[dim.key] for dim in dimensions if dim.key in config for target in dim.targets}


def check_space(space: Space, model: Mapping, train: Mapping, vocab_size: int) -> dict[str, bool]:
    """Every value a dimension can take must be a valid setting of its keys; returns which dimensions
    sample whole numbers. Raises SeqLabError naming the space's file and key."""
    from pydantic import ValidationError

    from seqlab.config import ModelParams, TrainParams
    from seqlab.models import config_from_params

    integer = {}
    for dim in space.dimensions:
        bases = [({"model": model, "train": train}[t.split(".")[0]])[t.split(".")[1]] for t in dim.targets]
        integer[dim.key] = all(isinstance(b, int) and not isinstance(b, bool) for b in bases)
        if dim.values is None and integer[dim.key] and not all(float(v).is_integer() for v in (dim.low, dim.high)):
            raise SeqLabError(f"{space.source}.{dim.key}: {dim.targets[0]} is a whole number; min and max must be too")
        for value in dim.candidates():
            if integer[dim.key] and dim.values is None:
                value = int(value)
            trial_model, trial_train = apply({dim.key: value}, [dim], model, train)
            try:
                ModelParams.model_validate(trial_model)
                TrainParams.model_validate(trial_train)
                config_from_params(trial_model, vocab_size)
            except ValidationError as err:
                problem = err.errors()[0]
                raise SeqLabError(f"{space.source}.{dim.key}: {value!r} is not a valid {dim.targets[0]}: "
                                  f"{problem['msg'].removeprefix('Value error, ')}") from None
            except SeqLabError as err:
                raise SeqLabError(f"{space.source}.{dim.key}: {value!r} does not fit: {err}") from None
    return integer


# --- the Ray side -------------------------------------------------------------------------------

def connect(address: str | None) -> str:
    """Start a local Ray instance, or join the cluster at ``address`` (``tune.address``, else
    ``RAY_ADDRESS``); fail within seconds when it cannot be reached. Returns a description.

    Trial output stays in the workers' logs: the driver prints one line per trial instead, and a
    failed trial's error is in its row of the trials table.
    """
    import logging

    import ray

    source = "params.yaml: tune.address"
    if address is None and os.environ.get("RAY_ADDRESS"):
        address, source = os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    if address in (None, "local"):
        os.environ.pop("RAY_ADDRESS", None)  # an empty or "local" RAY_ADDRESS means a new local instance too
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        return "a local Ray instance"
    if address != "auto":
        _probe(address, source)
    import seqlab

    runtime_env = {"py_modules": [str(Path(seqlab.__file__).parent)]}  # workers import the driver's seqlab
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, runtime_env=runtime_env)
    except Exception as err:  # ConnectionError, RuntimeError, ...: whatever ray raises, one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SeqLabError(f"{source}: cannot connect to the Ray cluster at {address}: {first}") from None
    return f"the Ray cluster at {address}"


def _probe(address: str, source: str, timeout: float = 5.0) -> None:
    """A TCP connection to the cluster's head, so an unreachable address fails in seconds, not minutes."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SeqLabError(f"{source}: {address!r} is not host:port, ray://host:port, auto or local")
    reason = unreachable(host, int(port), timeout)
    if reason:
        raise SeqLabError(f"{source}: cannot reach the Ray cluster at {address} ({reason}); "
                          f"start one with `ray start --head` or unset it for a local instance")


def trial_resources(cpus: float, gpus: float, gpu_fallback: bool) -> dict[str, float]:
    """Resources per trial that the connected cluster can give, or a one-line error."""
    import ray

    total = ray.cluster_resources()
    have_cpus, have_gpus = total.get("CPU", 0), total.get("GPU", 0)
    if gpus > 0 and have_gpus == 0:
        if not gpu_fallback:
            raise SeqLabError(f"params.yaml: tune.gpus_per_trial: trials ask for {gpus:g} GPU, but the Ray cluster has none "
                              "(tune.gpu_fallback: true runs them on CPUs)")
        print("tune: no GPU in the Ray cluster; trials run on CPUs (tune.gpu_fallback)")
        gpus = 0.0
    elif gpus > have_gpus:
        raise SeqLabError(f"params.yaml: tune.gpus_per_trial: trials ask for {gpus:g} GPUs, but the Ray cluster has {have_gpus:g}")
    if cpus > have_cpus:
        raise SeqLabError(f"params.yaml: tune.cpus_per_trial: trials ask for {cpus:g} CPUs, but the Ray cluster has {have_cpus:g}")
    return {"cpu": cpus, "gpu": gpus}


def _trial(config: dict, data: dict) -> None:
    """One trial: the stage's trainer on the sampled configuration, reporting after every epoch."""
    import torch
    from ray import tune

    from seqlab.models import build, config_from_params
    from seqlab.train import TrainConfig, fingerprint, train

    torch.set_num_threads(max(1, int(data["resources"]["cpu"])))
    model_spec, train_spec = apply(config, data["dimensions"], data["model"], data["train"])
    model_config = config_from_params(model_spec, data["vocab_size"])
    cfg = TrainConfig(**{**train_spec, "epochs": data["epochs"], "patience": data["epochs"],  # only ASHA stops a trial
                         "device": "cuda" if data["resources"]["gpu"] else "cpu", "checkpoint_every": 1 << 30})
    with tempfile.TemporaryDirectory(prefix="seqlab-trial-") as tmp:
        work, done = Path(tmp), 0
        checkpoint = tune.get_checkpoint()
        if checkpoint:  # a retry after a crash, or a paused trial resumed: carry on from the last epoch
            with checkpoint.as_directory() as saved:
                shutil.copyfile(Path(saved) / "last.pt", work / "last.pt")
                done = json.loads((Path(saved) / "progress.json").read_text())["epochs"]

        def report(epoch) -> None:
            if epoch.epoch <= done:  # replayed history of a resumed run: reported before the crash
                return
            saved = work / f"checkpoint-{epoch.epoch}"
            saved.mkdir()
            shutil.copyfile(work / "last.pt", saved / "last.pt")
            (saved / "progress.json").write_text(json.dumps({"epochs": epoch.epoch}))
            tune.report({"epoch": epoch.epoch, "valid_loss": epoch.valid_loss, "valid_ppl": epoch.valid_ppl,
                         "train_loss": epoch.train_loss, "tokens_per_s": epoch.tokens_per_s, "lr": epoch.lr,
                         "epoch_seconds": epoch.seconds}, checkpoint=tune.Checkpoint.from_directory(str(saved)))
            shutil.rmtree(saved, ignore_errors=True)
            marker = data.get("crash_marker")
            if marker:
                try:
                    os.close(os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY))
                except FileExistsError:
                    return
                raise RuntimeError(f"injected trial crash ({FAULT_ENV})")

        torch.manual_seed(cfg.seed)
        model = build(model_config)
        train(model, cfg, data["train_ids"], data["valid_ids"], data["valid_scored"], work, data["vocab_sha256"],
              fingerprint(model_config.as_dict(), vars(cfg)), report, progress=False)


@dataclass
class TrialRecord:
    index: int
    trial_id: str
    config: dict
    run_id: str | None = None
    results: list[dict] = field(default_factory=list)
    status: str = "running"
    retries: int = 0
    error: str = ""

    @property
    def best(self) -> dict:
        """The reported epoch with the lowest valid loss; {} before the first report."""
        return min(self.results, key=lambda r: r["valid_loss"], default={})


def _tracker(client, experiment_id: str, parent_run_id: str, space: Space, total: int, bar):
    """A Tune callback in the driver: one MLflow child run per trial, the progress bar, a line per trial."""
    from mlflow.entities import Metric, Param
    from ray import tune
    from tqdm.auto import tqdm

    inherited = {k: v for k, v in client.get_run(parent_run_id).data.tags.items() if k == "mlflow.source.git.commit"}

    class Tracker(tune.Callback):
        def __init__(self, client, bar):
            self.trials: dict[str, TrialRecord] = {}
            self.client, self.bar = client, bar

        def __getstate__(self):  # Tune pickles its callbacks with the experiment state: the records are the state
            return {"trials": self.trials}

        def on_trial_start(self, iteration, trials, trial, **info):
            if trial.trial_id in self.trials:
                return
            index = next(i for i, t in enumerate(trials, 1) if t is trial)  # the order Tune made them in, not started them
            record = TrialRecord(index, trial.trial_id, {k: _plain(v) for k, v in trial.config.items()})
            self.trials[trial.trial_id] = record
            described = ", ".join(f"{k}={_show(v)}" for k, v in record.config.items())
            run = self.client.create_run(experiment_id, run_name=f"trial {record.index:03d}: {described}"[:250], tags={
                **inherited, "mlflow.parentRunId": parent_run_id, "seqlab.run_kind": "trial", "seqlab.trial_id": trial.trial_id,
                "seqlab.search": space.name})
            record.run_id = run.info.run_id
            self.client.log_batch(record.run_id, params=[Param(k, str(v)) for k, v in record.config.items()])

        def on_trial_result(self, iteration, trials, trial, result, **info):
            record = self.trials[trial.trial_id]
            record.results.append({k: result[k] for k in ("epoch", "valid_loss", "valid_ppl", "train_loss", "tokens_per_s", "lr", "epoch_seconds")})
            stamp = int(time.time() * 1000)
            self.client.log_batch(record.run_id, metrics=[
                Metric(name, float(result[key]), stamp, int(result["epoch"]))
                for name, key in (("valid_loss", "valid_loss"), ("epoch_valid_ppl", "valid_ppl"), ("train_loss", "train_loss"),
                                  ("tokens_per_s", "tokens_per_s"), ("lr", "lr"))])
            self.bar.update(1)
            best = min((r["valid_ppl"] for t in self.trials.values() for r in t.results), default=math.inf)
            self.bar.set_postfix(best_ppl=f"{best:.1f}", refresh=False)

        def on_trial_recover(self, iteration, trials, trial, **info):
            record = self.trials[trial.trial_id]
            record.retries += 1
            self.client.set_tag(record.run_id, "seqlab.retries", str(record.retries))
            tqdm.write(f"trial {record.index:03d}: crashed after epoch {len(record.results)}; retrying from its last checkpoint")

        def on_trial_complete(self, iteration, trials, trial, **info):
            record = self.trials[trial.trial_id]
            record.status = "completed" if len(record.results) >= space.epochs else "stopped by ASHA"
            self.bar.total -= space.epochs - len(record.results)  # epochs the trial will never run
            self.bar.refresh()
            self._end(record, "FINISHED")

        def on_trial_error(self, iteration, trials, trial, **info):
            record = self.trials.get(trial.trial_id)
            if record is None:
                return
            record.status = "error"
            self.bar.total -= space.epochs - len(record.results)
            self.bar.refresh()
            record.error = _error_line(trial.error_file)
            self._end(record, "FAILED")

        def _end(self, record: TrialRecord, status: str) -> None:
            best = record.best
            if best:
                stamp = int(time.time() * 1000)
                self.client.log_batch(record.run_id, metrics=[Metric("valid_ppl", best["valid_ppl"], stamp, 0),
                                                              Metric("best_epoch", best["epoch"], stamp, 0)])
                self.client.set_tag(record.run_id, "seqlab.trial_status", record.status)
            self.client.set_terminated(record.run_id, status)
            ppl = f"best valid ppl {best['valid_ppl']:.2f}" if best else record.error
            tqdm.write(f"trial {record.index:03d}/{total} {record.status} after {len(record.results)} epochs: {ppl}")

    return Tracker(client, bar)


def _error_line(error_file) -> str:
    """The last line of a trial's error file: the exception and its message."""
    try:
        lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "failed"
    except (OSError, TypeError):
        return "failed"


def _plain(value):
    """A Python scalar for a numpy one (Ray samples numpy integers), so configs write as JSON."""
    return value.item() if isinstance(value, np.generic) else value


def _show(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@dataclass
class SearchResult:
    trials: Any  # pandas.DataFrame, one row per trial, best first
    best: dict  # the best trial's config (seed names), epoch, valid loss and ppl
    trial_epochs: int  # epochs run by all trials together ...
    full_epochs: int  # ... and had every trial run to its end
    resources: dict[str, float]
    cluster: str
    seconds: float


def search_data(tokens: str | Path, vocab, train_tokens: int | None) -> dict:
    """What every trial reads: the first ``train_tokens`` train ids (all when None), the valid split
    and the vocabulary's size and hash."""
    from seqlab.evaluate import load_eval_set

    train_set, valid = (load_eval_set(tokens, split, vocab) for split in ("train", "valid"))
    train_ids = train_set.segments.ids[:train_tokens] if train_tokens else train_set.segments.ids
    return {"train_ids": train_ids, "valid_ids": valid.segments.ids, "valid_scored": valid.scored,
            "vocab_size": len(vocab), "vocab_sha256": vocab.sha256}


def run_search(space: Space, tune_params, model: Mapping, train: Mapping, data: dict, tracking: tuple, storage: str | Path) -> SearchResult:
    """Run the search; ``data`` holds the id streams and vocabulary facts, ``tracking`` is the MLflow
    (client, experiment id, parent run id) the trials are logged under."""
    import logging

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables would interleave with the progress bar
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # a checkpoint per epoch is the point
    import pandas as pd
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from tqdm.auto import tqdm

    integer = check_space(space, model, train, data["vocab_size"])
    started = time.perf_counter()
    cluster = connect(tune_params.address)
    try:
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        if nodes > 1 and "://" not in str(storage) and tune_params.storage is None:
            print(f"tune: {nodes} Ray nodes, but trial checkpoints go to {storage} on this machine; set tune.storage "
                  "to a shared directory or a bucket URI so a retried trial can resume on another node")
        resources = trial_resources(tune_params.cpus_per_trial, tune_params.gpus_per_trial, tune_params.gpu_fallback)
        if tune_params.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            logging.getLogger("optuna").setLevel(logging.WARNING)
            searcher = OptunaSearch(seed=tune_params.seed)
        else:
            from ray.tune.search.basic_variant import BasicVariantGenerator

            searcher = BasicVariantGenerator(random_state=tune_params.seed)
        scheduler = ASHAScheduler(time_attr="epoch", max_t=space.epochs, grace_period=tune_params.grace_period,
                                  reduction_factor=tune_params.reduction_factor)
        payload = {**data, "dimensions": space.dimensions, "model": dict(model), "train": dict(train), "epochs": space.epochs,
                   "resources": resources, "crash_marker": os.environ.get(FAULT_ENV)}
        trainable = tune.with_resources(tune.with_parameters(_trial, data=payload), resources)
        total = tune_params.num_samples * space.epochs
        with tqdm(total=total, unit="trial-epoch", desc=f"search {space.name}", dynamic_ncols=True) as bar:
            tracker = _tracker(*tracking, space, tune_params.num_samples, bar)
            tuner = tune.Tuner(
                trainable,
                param_space={dim.key: dim.domain(integer[dim.key]) for dim in space.dimensions},
                tune_config=tune.TuneConfig(metric="valid_loss", mode="min", search_alg=searcher, scheduler=scheduler,
                                            num_samples=tune_params.num_samples, max_concurrent_trials=tune_params.max_concurrent),
                run_config=tune.RunConfig(
                    name="search", storage_path=str(storage), verbose=0, callbacks=[tracker],
                    failure_config=tune.FailureConfig(max_failures=tune_params.max_failures),
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=1)),
            )
            tuner.fit()
    finally:
        ray.shutdown()
    seconds = time.perf_counter() - started
    records = sorted(tracker.trials.values(), key=lambda r: r.index)
    if not any(r.results for r in records):
        errors = [r.error for r in records if r.error]
        raise SeqLabError(f"tune: no trial finished an epoch; first error: {errors[0] if errors else 'none reported'}")
    rows = []
    for record in records:
        best = record.best
        rows.append({"trial": record.index, "status": record.status, "epochs": len(record.results),
                     "best_epoch": best.get("epoch"), "valid_loss": best.get("valid_loss"), "valid_ppl": best.get("valid_ppl"),
                     "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in record.results])) if record.results else None,
                     "minutes": sum(r["epoch_seconds"] for r in record.results) / 60, "retries": record.retries,
                     **record.config, "error": record.error, "mlflow_run_id": record.run_id})
    table = pd.DataFrame(rows).sort_values(["valid_loss", "trial"], na_position="last").reset_index(drop=True)
    top = table.iloc[0]
    best = {"trial": int(top["trial"]), "epoch": int(top["best_epoch"]), "valid_loss": float(top["valid_loss"]),
            "valid_ppl": float(top["valid_ppl"]), "config": next(r.config for r in records if r.index == top["trial"])}
    return SearchResult(table, best, int(table["epochs"].sum()), tune_params.num_samples * space.epochs, resources, cluster, seconds)


def plot_search(table, space: Space, path: str | Path) -> None:
    """Best valid perplexity of each trial against each searched parameter, one panel per parameter."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    from seqlab.io import atomic_path

    dims = [d for d in space.dimensions if len(set(d.candidates())) > 1] or [None]  # fixed keys have nothing to show
    columns = min(3, len(dims))
    rows = math.ceil(len(dims) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.4 * rows), squeeze=False, sharey=True)
    done = table.dropna(subset=["valid_ppl"])
    best = done.iloc[0] if len(done) else None
    styles = {"completed": dict(marker="o", color="C0"), "stopped by ASHA": dict(marker="o", facecolors="none", edgecolors="C0")}
    for ax, dim in zip(axes.flat, dims):
        if dim is None:
            ax.text(0.5, 0.5, "no parameter varies:\nnothing to compare", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        categorical = dim.values is not None
        order = {value: i for i, value in enumerate(dim.values)} if categorical else None
        position = (lambda v: order[v]) if categorical else float
        for status, style in styles.items():
            part = done[done["status"] == status]
            ax.scatter([position(v) for v in part[dim.key]], part["valid_ppl"], s=36, label=status, **style)
        if best is not None:
            ax.scatter([position(best[dim.key])], [best["valid_ppl"]], marker="*", s=220, color="C1", zorder=3, label="best")
        if categorical:
            ax.set_xticks(range(len(dim.values)), [str(v) for v in dim.values])
            ax.set_xlim(-0.5, len(dim.values) - 0.5)
        elif dim.log:
            ax.set_xscale("log")
            ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(dim.key)
        ax.grid(True, alpha=0.3)
    for ax in axes.flat[len(dims):]:
        ax.set_axis_off()
    for ax in axes[:, 0]:
        ax.set_ylabel("best valid perplexity")
    if dims[0] is not None:
        axes.flat[0].legend(loc="best", fontsize=8)
    fig.suptitle(f"{space.name}: {len(table)} trials, valid perplexity by searched parameter")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)


def tuned(params, best_config: str | Path):
    """``params`` with the search's best configuration (``best_config``'s overrides) put into its
    ``model`` and ``train`` sections, validated; and the overrides."""
    from seqlab.config import with_changes
    from seqlab.io import read_json

    best = read_json(best_config)
    changes = best.get("overrides") if isinstance(best, dict) else None
    if not isinstance(changes, dict):
        raise SeqLabError(f"{best_config}: overrides: missing or not an object")
    return with_changes(params, changes, f"{best_config}: overrides"), changes
