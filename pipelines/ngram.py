"""ngram: the grid of params.yaml (every estimator at every order) -> models/ngram/<estimator>-<order>/
(model.npz, model.arpa, scores.json, built_from.json), each model its own MLflow run and registered version.

The grid is one stage: the data and the MLflow connection are shared, so a model costs its own build
and registration rather than a process start each. Models are built in worker processes (one per
core, each counting an order once for all its estimators) while this process logs and registers the
finished ones, in grid order. A model whose ``built_from.json`` says it was
built from the same inputs (the stage's deps in dvc.yaml, the n-gram params, estimator and order) is
kept as it is, run and version included: adding an order builds only the new models, and a model
dropped from the grid is removed.
"""

import gzip
import json
import resource
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import psutil
import yaml

from seqlab import paths, stage
from seqlab.errors import exit_on_error
from seqlab.io import atomic_path, dvc_md5, sha256_text, write_json
from seqlab.ngram import BACKOFF_FORM, count, estimate, parallel, prune
from seqlab.ngram.arpa import write_arpa
from seqlab.ngram.counts import model_bytes
from seqlab.ngram.model_file import save_model
from seqlab.ngram.ray_engine import count_on_ray, estimate_on_ray
from seqlab.registry import registered_name
from seqlab.scoring import Summary, load_eval_set, score
from seqlab.tune.cluster import connect
from seqlab.vocab import BOS, load_vocab

BUILT_FROM = "built_from.json"


def inputs() -> dict:
    """The DVC hash of every dependency of this stage in dvc.yaml: what a model is built from."""
    deps = yaml.safe_load(Path("dvc.yaml").read_text())["stages"]["ngram"]["deps"]
    return {dep: dvc_md5(dep) for dep in deps}


def kept(folder: Path, fingerprint: str) -> bool:
    try:
        return json.loads((folder / BUILT_FROM).read_text())["fingerprint"] == fingerprint and (folder / "scores.json").exists()
    except (OSError, ValueError, KeyError):
        return False


def build(estimator: str, order: int, folder: Path, packed: Path) -> dict:
    """Count (once per order and worker, or once on Ray), estimate, score and write one model's
    folder, and the gzipped ARPA for the run in ``packed``; what its run logs. Runs in a worker
    process, or in this one with the Ray engine."""
    cfg, vocab, splits = SHARED["cfg"], SHARED["vocab"], SHARED["splits"]
    name = f"{estimator}-{order}"
    with atomic_path(folder) as tmp:
        tmp.mkdir()
        started = time.perf_counter()
        if cfg.engine == "ray" and estimator in ("kn", "mkn"):  # estimated on the cluster, as Parquet per order
            model = estimate_on_ray(SHARED["on_ray"], estimator, order, tmp / "ngrams")
        else:
            if order not in SHARED["counted"]:
                SHARED["counted"] = {order: SHARED["on_ray"].tables(order) if cfg.engine == "ray" else prune(
                    count(splits["train"].segments, order, len(vocab), cfg.memory_bytes, threads=SHARED["threads"]),
                    cfg.cutoffs, len(vocab))}
            model = estimate(estimator, SHARED["counted"][order], len(vocab), vocab.index[BOS], valid=splits["valid"].segments,
                             k=cfg.addk_k)
        build_seconds = time.perf_counter() - started
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            scores = {split: score(model, splits[split], name) for split in ("valid", "test")}
        summary = Summary(f"ngram-{name}", "ngram", estimator, order, registered_name("ngram"),
                          {"params": model.params, "cutoffs": cfg.cutoffs, "ngrams": [len(t) for t in model.tables]},
                          vocab.sha256, scores["valid"], scores["test"])
        save_model(model, tmp / "model.npz", vocab.sha256)
        if estimator in BACKOFF_FORM:
            write_arpa(model, list(vocab.tokens), tmp / "model.arpa")
            with open(tmp / "model.arpa", "rb") as src, gzip.open(packed / "model.arpa.gz", "wb", compresslevel=1) as dst:
                shutil.copyfileobj(src, dst)
        write_json(tmp / "scores.json", summary.as_dict())
    return {"summary": summary, "params": model.params, "build_seconds": build_seconds,
            "warnings": [str(w.message) for w in caught], "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


SHARED: dict = {}  # what the workers read: set before they fork


@exit_on_error
def main() -> None:
    params = stage.params()
    cfg = params.ngram
    grid = [(estimator, order) for order in cfg.orders for estimator in cfg.estimators]  # an order's counts serve all estimators
    settings = {"max_order": cfg.max_order, "addk_k": cfg.addk_k, "cutoffs": cfg.cutoffs}
    built_from = inputs()
    root = Path(paths.NGRAM)
    names = {f"{estimator}-{order}" for estimator, order in grid}
    for stale in sorted(p for p in root.glob("*") if p.is_dir() and p.name not in names):
        shutil.rmtree(stale)
        print(f"ngram {stale.name}: no longer in the grid (params.yaml: ngram.estimators, ngram.orders); removed")
    todo = []
    for estimator, order in grid:
        record = {"estimator": estimator, "order": order, "ngram": settings, "inputs": built_from}
        fingerprint = sha256_text(json.dumps(record, sort_keys=True))
        if kept(Path(paths.ngram_folder(estimator, order)), fingerprint):
            print(f"ngram {estimator}-{order}: built from the same inputs; kept")
        else:
            todo.append((estimator, order, {"fingerprint": fingerprint, **record}))
    started_grid = time.perf_counter()
    if todo:
        vocab = load_vocab(paths.VOCAB)
        SHARED.update(cfg=cfg, vocab=vocab, counted={},
                      splits={split: load_eval_set(paths.TOKENS, split, vocab) for split in ("valid", "test")})
    if todo and cfg.engine == "ray":
        build_on_ray(params, todo)
    elif todo:
        SHARED["splits"]["train"] = load_eval_set(paths.TOKENS, "train", vocab)
        workers = min(len(todo), parallel.cores())
        positions, highest = len(SHARED["splits"]["train"].segments.ids), max(order for _, order, _ in todo)
        need, free = model_bytes(positions, highest, len(vocab)), psutil.virtual_memory().available
        if workers > 1 and need * workers > free:  # each worker holds the model it builds
            workers = max(1, free // need)
            print(f"ngram: {workers} worker(s): an order-{highest} model of {positions:,} train positions may take up to "
                  f"{need / 2**30:.1f} GiB, and {free / 2**30:.1f} GiB is free")
        SHARED["threads"] = max(1, parallel.cores() // workers)  # counting's sorts share the cores left to a worker
        # the builds run in forked workers, the MLflow runs and registrations here, in grid order
        with tempfile.TemporaryDirectory() as packed, ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
            jobs = []
            for estimator, order, record in todo:
                (Path(packed) / f"{estimator}-{order}").mkdir()
                jobs.append(pool.submit(build, estimator, order, Path(paths.ngram_folder(estimator, order)),
                                        Path(packed) / f"{estimator}-{order}"))
            for (estimator, order, record), job in zip(todo, jobs):
                publish(params, estimator, order, record, job.result(), Path(packed) / f"{estimator}-{order}")
    print(f"ngram: {len(todo)} of {len(grid)} models built, {len(grid) - len(todo)} kept, in {time.perf_counter() - started_grid:.1f} s")


def build_on_ray(params, todo: list) -> None:
    """The Ray engine: the train tokens counted once on the cluster up to the highest order needed,
    then each model estimated (kn and mkn there, the others here from the counts) and published."""
    import ray

    cfg = params.ngram
    print(f"ngram: counting and estimating on {connect(params.tune.address)} (ngram.engine: ray)")
    try:
        SHARED["on_ray"] = count_on_ray(f"{paths.TOKENS}/train.txt", SHARED["vocab"], max(order for _, order, _ in todo),
                                        cfg.memory_bytes, cfg.cutoffs, cfg.partitions)
        print(f"ngram: counted {SHARED['on_ray'].shards} shard(s) into {SHARED['on_ray'].parts} partition(s)")
        with tempfile.TemporaryDirectory() as packed:
            for estimator, order, record in todo:
                (Path(packed) / f"{estimator}-{order}").mkdir()
                built = build(estimator, order, Path(paths.ngram_folder(estimator, order)), Path(packed) / f"{estimator}-{order}")
                publish(params, estimator, order, record, built, Path(packed) / f"{estimator}-{order}")
    finally:
        ray.shutdown()


def publish(params, estimator: str, order: int, record: dict, built: dict, packed: Path) -> None:
    """The model's MLflow run and registered version. A model whose registration fails is removed, so
    the next run builds and registers it again."""
    name, out = f"{estimator}-{order}", paths.ngram_folder(estimator, order)
    summary, valid = built["summary"], SHARED["splits"]["valid"]
    for warning in built["warnings"]:
        print(f"warning: {warning}")
    with stage.tracked(f"ngram {name}", params, "ngram", outs=(out,)) as run:
        try:
            write_json(Path(out) / BUILT_FROM, record)  # before publish: the folder's hash is tagged as it stays
            if (packed / "model.arpa.gz").exists():
                run.log_artifact(packed / "model.arpa.gz")
            version = stage.publish(
                run, summary, out, {"model": f"{out}/model.npz"}, stage.example_context(valid, SHARED["vocab"]),
                params={"estimator": estimator, "order": order, **{f"tuned.{k}": v for k, v in built["params"].items()}},
                metrics={"build_seconds": built["build_seconds"], "peak_memory_mb": built["peak_mb"]},
                artifacts=[f"{out}/scores.json"], tags={"estimator": estimator, "order": str(order)})
        except BaseException:
            shutil.rmtree(out, ignore_errors=True)  # not kept: built and registered again next time
            raise
    print(f"ngram {name}: valid ppl {summary.valid.ppl:.2f}, test ppl {summary.test.ppl:.2f}, "
          f"built in {built['build_seconds']:.2f} s; registered as {summary.registered_model} version {version}")


if __name__ == "__main__":
    main()
