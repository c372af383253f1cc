"""The final training on Ray Train: ``train.workers`` data-parallel workers (``TorchTrainer``, DDP;
gloo on CPUs, NCCL on GPUs) on the search's cluster (``tune.address``, else ``RAY_ADDRESS``, else a
local instance).

Each worker runs the one trainer loop (``training.fit``) on its share of every batch (the task cuts
it; the loop keeps the workers in step), so N workers train the model one process would with the
same batch: the same steps, schedule and rounds, gradients averaged over the whole batch. Worker 0
writes the resume checkpoint into the run's ``workdir`` and scores valid; after the last round its
best weights come back through Ray Train's checkpoint storage (``tune.storage``, a shared path or a
bucket on a multi-node cluster), so the caller finds ``workdir/best.pt`` as after a single-process
run. A crashed worker group is restarted up to ``tune.max_failures`` times and resumes from the last
checkpoint (on a multi-node cluster, ``workdir`` must then be on shared storage); past that, one
line names the failure and nothing is published.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

from seqlab.config import TrainParams, TuneParams
from seqlab.errors import SeqLabError
from seqlab.io import create_once
from seqlab.training.loop import Plan, Result, Round, perplexity
from seqlab.tune.cluster import connect, error_line

FAULT_ENV = "SEQLAB_FAULT_WORKER_EXIT"  # a marker path: the first worker 1 to create it dies after its first round (fault tests)


def _worker(config: dict[str, Any]) -> dict | None:
    """One worker: the model built as the single process builds it, then ``fit`` on its share."""
    import ray
    import ray.train
    import torch

    from seqlab.determinism import fix_threads
    from seqlab.models import build
    from seqlab.training import fit

    rank = ray.train.get_context().get_world_rank()
    cfg: TrainParams = config["cfg"]
    fix_threads(config["threads"])
    if torch.cuda.is_available() and cfg.device != "cpu":
        import ray.train.torch

        torch.cuda.set_device(ray.train.torch.get_device())
    torch.manual_seed(cfg.seed)
    model = build(config["model"])  # the weights worker 0 broadcasts are the single process's
    if rank:
        torch.manual_seed(cfg.seed + 1_000_003 * rank)  # each worker its own dropout masks
    task = ray.get(config["task"])
    Path(config["workdir"]).mkdir(parents=True, exist_ok=True)  # on a node of a cluster, perhaps not the driver's

    def on_round(record: Round) -> None:
        ray.train.report(asdict(record))
        if rank == 0:
            config["rounds"].put(asdict(record))  # to the driver, which logs it as it comes
        elif config["crash_marker"] and create_once(config["crash_marker"]):
            os._exit(3)  # the process dies as a killed one does: no exception, no clean-up

    result = fit(model, task, cfg, config["workdir"], config["fingerprint"], on_round, progress=False)
    done = {"best_round": result.best_round, "rounds": len(result.history)}
    if rank:
        ray.train.report(done)
        return None
    with tempfile.TemporaryDirectory() as folder:
        shutil.copyfile(Path(config["workdir"]) / "best.pt", Path(folder) / "best.pt")
        ray.train.report(done, checkpoint=ray.train.Checkpoint.from_directory(folder))
    return {"history": [asdict(r) for r in result.history], "best_round": result.best_round,
            "best_valid_loss": result.best_valid_loss, "stopped_early": result.stopped_early,
            "resumed_from": result.resumed_from}


def fit_on_workers(model_config, task, cfg: TrainParams, tune: TuneParams, workdir: str | Path, run_fingerprint: str,
                   on_round: Callable[[Round], None] = lambda record: None, progress: bool = True) -> Result:
    """``training.fit`` of ``model_config`` on ``task`` by ``cfg.workers`` Ray Train workers; the best
    weights end in ``workdir/best.pt``, and each round is passed to ``on_round`` here as worker 0 ends it."""
    os.environ.setdefault("RAY_TRAIN_V2_ENABLED", "1")
    import ray
    import ray.train
    from ray.train.torch import TorchConfig, TorchTrainer
    from ray.util.queue import Queue

    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    where = connect(tune.address)
    try:
        total = ray.cluster_resources()
        gpus = cfg.device != "cpu" and total.get("GPU", 0) >= cfg.workers
        if cfg.device == "cuda" and not gpus:
            raise SeqLabError(f"params.yaml: train.device is cuda, but {where} has {total.get('GPU', 0):g} GPUs for "
                              f"train.workers: {cfg.workers}")
        cpus = max(1, int(total.get("CPU", 1) // cfg.workers)) if tune.address is None and not os.environ.get("RAY_ADDRESS") \
            else max(1, int(tune.cpus_per_trial))  # a local instance shared out; a cluster's workers as big as a trial
        if cfg.workers * cpus > total.get("CPU", 0):
            raise SeqLabError(f"params.yaml: train.workers: {cfg.workers} workers of {cpus} CPU need {cfg.workers * cpus}, "
                              f"but {where} has {total.get('CPU', 0):g}")
        print(f"train: {cfg.workers} workers on {where}, each {'a GPU (NCCL)' if gpus else f'{cpus} CPU (gloo)'}")
        storage = tune.storage or str(workdir / "ray")
        name = f"train-{uuid.uuid4().hex[:8]}"  # a run of its own: resuming is the loop's, from workdir/last.pt
        rounds = Queue()
        trainer = TorchTrainer(
            _worker,
            train_loop_config={"cfg": cfg, "model": model_config, "task": ray.put(task), "workdir": str(workdir),
                               "fingerprint": run_fingerprint, "threads": cpus, "rounds": rounds,
                               "crash_marker": os.environ.get(FAULT_ENV)},
            torch_config=TorchConfig(backend="nccl" if gpus else "gloo"),
            scaling_config=ray.train.ScalingConfig(num_workers=cfg.workers, use_gpu=gpus, resources_per_worker={"CPU": cpus}),
            run_config=ray.train.RunConfig(name=name, storage_path=storage,
                                           failure_config=ray.train.FailureConfig(max_failures=tune.max_failures)))
        outcome = _follow(trainer, rounds, Plan.of(cfg, task.tokens_per_step(cfg)).rounds, on_round, progress)
        if isinstance(outcome, BaseException):  # TrainingFailedError and whatever else Ray raises: one line
            resume = f"; the next run resumes from {workdir / 'last.pt'}" if (workdir / "last.pt").exists() else ""
            raise SeqLabError(f"train.workers: training on {cfg.workers} Ray Train workers failed after {tune.max_failures} "
                              f"restarts (tune.max_failures): {error_line(outcome).rstrip('.')}{resume}")
        if outcome.checkpoint is None or outcome.return_value is None:
            raise SeqLabError(f"train.workers: the Ray Train run in {storage} ended without worker 0's best model")
        with outcome.checkpoint.as_directory() as folder:
            shutil.copyfile(Path(folder) / "best.pt", workdir / "best.pt.tmp")
        os.replace(workdir / "best.pt.tmp", workdir / "best.pt")
        done = outcome.return_value
        if tune.storage is None:
            shutil.rmtree(workdir / "ray" / name, ignore_errors=True)
    finally:
        ray.shutdown()
    history = [Round(**r) for r in done["history"]]
    print(f"train: {cfg.workers} workers, {history[-1].tokens:,} tokens in {(time.perf_counter() - started) / 60:.1f} min "
          f"(best valid ppl {perplexity(done['best_valid_loss']):.2f})")
    return Result(history, done["best_round"], done["best_valid_loss"], done["stopped_early"], done["resumed_from"])


def _follow(trainer, rounds, total: int, on_round: Callable[[Round], None], progress: bool):
    """Run ``trainer`` in a thread while each round worker 0 ends goes to ``on_round`` (once, even when
    a restarted worker group replays its history); the trainer's result, or the error it raised."""
    import threading
    from queue import Empty

    from tqdm.auto import tqdm

    box: dict[str, Any] = {}

    def fit() -> None:
        try:
            box["outcome"] = trainer.fit()
        except BaseException as err:
            box["outcome"] = err

    thread = threading.Thread(target=fit, name="ray-train", daemon=True)
    thread.start()
    seen = 0
    with tqdm(total=total, unit="round", desc="train", disable=not progress, dynamic_ncols=True) as bar:
        while thread.is_alive() or not rounds.empty():
            try:
                record = Round(**rounds.get(timeout=1.0))
            except Empty:
                continue
            if record.round <= seen:
                continue
            seen = record.round
            on_round(record)
            bar.update(1)
            bar.write(f"round {record.round}/{total} ({record.tokens:,} tokens): train loss {record.train_loss:.4f}, "
                      f"valid ppl {record.valid_ppl:.2f}, {record.tokens_per_s:,.0f} tokens/s, lr {record.lr:.3g}")
    thread.join()
    return box["outcome"]
