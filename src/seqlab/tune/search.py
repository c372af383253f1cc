"""A search over a task's hyperparameters (the neural LM's or the encoder-decoder's): Ray Tune with
ASHA, random or Optuna TPE sampling.

Each trial (``seqlab.tune.trial``) trains the sampled configuration and reports after every round; the
driver records every trial as an MLflow child run of the search's run (``seqlab.tracking``), shows a
progress bar, and returns the trials as a table, best first.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from seqlab.config import TASKS, Params
from seqlab.errors import SeqLabError
from seqlab.tune.cluster import connect, trial_resources
from seqlab.tune.space import Dimension, Space
from seqlab.tune.trial import FAULT_ENV, check_space, plain, run_trial


def domain(dim: Dimension, integer: bool):
    """The Ray Tune sampling domain of a dimension."""
    from ray import tune

    if dim.values is not None:
        return tune.choice(list(dim.values))
    if integer:
        return (tune.lograndint if dim.log else tune.randint)(int(dim.low), int(dim.high) + 1)  # inclusive
    return (tune.loguniform if dim.log else tune.uniform)(dim.low, dim.high)


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
        """The reported round with the lowest valid loss; {} before the first report."""
        return min(self.results, key=lambda r: r["valid_loss"], default={})


def _tracker(runs, space: Space, total: int, bar):
    """A Tune callback in the driver: one MLflow child run per trial (``runs``), the progress bar, a
    line per trial."""
    from ray import tune
    from tqdm.auto import tqdm

    class Tracker(tune.Callback):
        def __init__(self, runs, bar):
            self.trials: dict[str, TrialRecord] = {}
            self.runs, self.bar = runs, bar

        def __getstate__(self):  # Tune pickles its callbacks with the experiment state: the records are the state
            return {"trials": self.trials}

        def on_trial_start(self, iteration, trials, trial, **info):
            if trial.trial_id in self.trials:
                return
            index = next(i for i, t in enumerate(trials, 1) if t is trial)  # the order Tune made them in, not started them
            record = TrialRecord(index, trial.trial_id, {k: plain(v) for k, v in trial.config.items()})
            self.trials[trial.trial_id] = record
            described = ", ".join(f"{k}={_show(v)}" for k, v in record.config.items())
            record.run_id = self.runs.start(f"trial {record.index:03d}: {described}", record.config,
                                            {"seqlab.trial_id": trial.trial_id, "seqlab.search": space.name})

        def on_trial_result(self, iteration, trials, trial, result, **info):
            record = self.trials[trial.trial_id]
            record.results.append({k: result[k] for k in ("round", "tokens", "valid_loss", "valid_ppl", "train_loss", "tokens_per_s", "lr", "round_seconds")})
            self.runs.log_metrics(record.run_id, {
                name: result[key] for name, key in (("valid_loss", "valid_loss"), ("round_valid_ppl", "valid_ppl"),
                                                    ("train_loss", "train_loss"), ("tokens_per_s", "tokens_per_s"), ("lr", "lr"))},
                step=int(result["round"]))
            self.bar.update(1)
            best = min((r["valid_ppl"] for t in self.trials.values() for r in t.results), default=math.inf)
            self.bar.set_postfix(best_ppl=f"{best:.1f}", refresh=False)

        def on_trial_recover(self, iteration, trials, trial, **info):
            record = self.trials[trial.trial_id]
            record.retries += 1
            self.runs.set_tag(record.run_id, "seqlab.retries", str(record.retries))
            tqdm.write(f"trial {record.index:03d}: crashed after round {len(record.results)}; retrying from its last checkpoint")

        def on_trial_complete(self, iteration, trials, trial, **info):
            record = self.trials[trial.trial_id]
            record.status = "completed" if len(record.results) >= space.rounds else "stopped by ASHA"
            self.bar.total -= space.rounds - len(record.results)  # rounds the trial will never run
            self.bar.refresh()
            self._end(record, "FINISHED")

        def on_trial_error(self, iteration, trials, trial, **info):
            record = self.trials.get(trial.trial_id)
            if record is None:
                return
            record.status = "error"
            self.bar.total -= space.rounds - len(record.results)
            self.bar.refresh()
            record.error = _error_line(trial.error_file)
            self._end(record, "FAILED")

        def _end(self, record: TrialRecord, status: str) -> None:
            best = record.best
            if best:
                self.runs.log_metrics(record.run_id, {"valid_ppl": best["valid_ppl"], "best_round": best["round"]})
                self.runs.set_tag(record.run_id, "seqlab.trial_status", record.status)
            self.runs.end(record.run_id, status)
            ppl = f"best valid ppl {best['valid_ppl']:.2f}" if best else record.error
            tqdm.write(f"trial {record.index:03d}/{total} {record.status} after {len(record.results)} rounds: {ppl}")

    return Tracker(runs, bar)


def _error_line(error_file) -> str:
    """The last line of a trial's error file: the exception and its message."""
    try:
        lines = [line for line in Path(error_file).read_text().splitlines() if line.strip()]
        return lines[-1].strip() if lines else "failed"
    except (OSError, TypeError):
        return "failed"


def _show(value) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


@dataclass
class SearchResult:
    trials: Any  # pandas.DataFrame, one row per trial, best first
    best: dict  # the best trial's config (seed names), round, valid loss and ppl
    trial_rounds: int  # rounds run by all trials together ...
    full_rounds: int  # ... and had every trial run to its end
    resources: dict[str, float]
    cluster: str
    seconds: float


def search_data(tokens: str | Path, vocab, train_tokens: int | None) -> dict:
    """What every trial reads: the first ``train_tokens`` train ids (all when None), the valid split
    and the vocabulary's size and hash."""
    from seqlab.scoring import load_eval_set

    train_set, valid = (load_eval_set(tokens, split, vocab) for split in ("train", "valid"))
    train_ids = train_set.segments.ids[:train_tokens] if train_tokens else train_set.segments.ids
    return {"task": "lm", "train_ids": train_ids, "valid_ids": valid.segments.ids, "valid_scored": valid.scored,
            "vocab_size": len(vocab), "vocab_sha256": vocab.sha256}


def pair_search_data(folder: str | Path, train_tokens: int | None, seed: int = 0) -> dict:
    """What every encoder-decoder trial reads: the train pairs (all, or pairs drawn at random with
    ``seed`` until they hold ``train_tokens`` target tokens: a file in dictionary order would give
    the first letters only), the valid pairs, the vocabularies' sizes and hash."""
    from seqlab.pairs import read_pairs
    from seqlab.transduce import encode_pairs, vocabularies_sha256
    from seqlab.vocab import PAIR_SPECIALS, load_vocab

    source_vocab, target_vocab = (load_vocab(Path(folder) / f"{side}_vocab", PAIR_SPECIALS) for side in ("source", "target"))
    train, valid = (encode_pairs(read_pairs(Path(folder) / f"{split}.tsv"), source_vocab, target_vocab) for split in ("train", "valid"))
    if train_tokens:
        train = [train[i] for i in np.random.default_rng(seed).permutation(len(train))]
        counts = np.cumsum([len(target) + 1 for _, target in train])  # + </s>, as the trainer counts
        train = train[: max(1, int(np.searchsorted(counts, train_tokens, side="right")))]
    return {"task": "seq2seq", "train_pairs": train, "valid_pairs": valid, "source_vocab": len(source_vocab),
            "target_vocab": len(target_vocab), "vocab_size": len(target_vocab),
            "vocab_sha256": vocabularies_sha256(source_vocab, target_vocab)}


def run_search(space: Space, params: Params, data: dict, runs, storage: str | Path) -> SearchResult:
    """Run the search of ``data``'s task (``params.tune`` or ``params.seq2seq_tune``) over ``space``
    from ``params``' sections of that task; ``data`` (``search_data``, ``pair_search_data``) holds
    what the trials read, ``runs`` the MLflow child runs (``StageRun.children``) they are logged as."""
    import logging

    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # Tune's own tables would interleave with the progress bar
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")  # a checkpoint per round is the point
    import pandas as pd
    import ray
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from tqdm.auto import tqdm

    section = TASKS[data["task"]].search
    tune_params = getattr(params, section)
    integer = check_space(space, params, data["vocab_size"], data["task"])
    started = time.perf_counter()
    cluster = connect(tune_params.address, section)
    try:
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        if nodes > 1 and "://" not in str(storage) and tune_params.storage is None:
            print(f"{section}: {nodes} Ray nodes, but trial checkpoints go to {storage} on this machine; set {section}.storage "
                  "to a shared directory or a bucket URI so a retried trial can resume on another node")
        resources = trial_resources(tune_params.cpus_per_trial, tune_params.gpus_per_trial, tune_params.gpu_fallback, section)
        if tune_params.search == "optuna":
            from ray.tune.search.optuna import OptunaSearch

            logging.getLogger("optuna").setLevel(logging.WARNING)
            searcher = OptunaSearch(seed=tune_params.seed)
        else:
            from ray.tune.search.basic_variant import BasicVariantGenerator

            searcher = BasicVariantGenerator(random_state=tune_params.seed)
        scheduler = ASHAScheduler(time_attr="round", max_t=space.rounds, grace_period=tune_params.grace_period,
                                  reduction_factor=tune_params.reduction_factor)
        payload = {**data, "dimensions": space.dimensions, "params": params, "tokens": space.tokens, "rounds": space.rounds,
                   "eval_every": tune_params.eval_every,
                   "resources": resources, "crash_marker": os.environ.get(FAULT_ENV)}
        trainable = tune.with_resources(tune.with_parameters(run_trial, data=payload), resources)
        total = tune_params.num_samples * space.rounds
        with tqdm(total=total, unit="trial-round", desc=f"search {space.name}", dynamic_ncols=True) as bar:
            tracker = _tracker(runs, space, tune_params.num_samples, bar)
            tuner = tune.Tuner(
                trainable,
                param_space={dim.key: domain(dim, integer[dim.key]) for dim in space.dimensions},
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
        raise SeqLabError(f"{section}: no trial finished a round; first error: {errors[0] if errors else 'none reported'}")
    rows = []
    for record in records:
        best = record.best
        rows.append({"trial": record.index, "status": record.status, "rounds": len(record.results),
                     "best_round": best.get("round"), "tokens": best.get("tokens"), "valid_loss": best.get("valid_loss"), "valid_ppl": best.get("valid_ppl"),
                     "tokens_per_s": float(np.mean([r["tokens_per_s"] for r in record.results])) if record.results else None,
                     "minutes": sum(r["round_seconds"] for r in record.results) / 60, "retries": record.retries,
                     **record.config, "error": record.error, "mlflow_run_id": record.run_id})
    table = pd.DataFrame(rows).sort_values(["valid_loss", "trial"], na_position="last").reset_index(drop=True)
    top = table.iloc[0]
    best = {"trial": int(top["trial"]), "round": int(top["best_round"]), "valid_loss": float(top["valid_loss"]),
            "valid_ppl": float(top["valid_ppl"]), "config": next(r.config for r in records if r.index == top["trial"])}
    return SearchResult(table, best, int(table["rounds"].sum()), tune_params.num_samples * space.rounds, resources, cluster, seconds)
