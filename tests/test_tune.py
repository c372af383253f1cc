"""The search: the space and its checks, and real Ray Tune runs (ASHA, a crashed trial retried, MLflow
children, resources that cannot be had, an unreachable or an existing Ray cluster)."""

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import REPO
from seqlab.config import load_params, searchable_keys, with_changes
from seqlab.errors import SeqLabError
from seqlab.tune.best import tuned
from seqlab.tune.plot import plot_search
from seqlab.tune.search import run_search
from seqlab.tune.space import load_space as load_space_with, overrides, parse_space as parse_space_with
from seqlab.tune.trial import FAULT_ENV, check_space

PARAMS = load_params(REPO / "params.yaml")
TINY = with_changes(PARAMS, {"model.embed_dim": 16, "model.hidden_dim": 16, "model.layers": 1, "model.memory": 4,
                             "model.cutoffs": [5, 10], "train.batch_size": 2, "train.bptt": 8, "train.eval_batch_size": 2}, "tiny")
SPACE = {"lr": {"min": 1e-3, "max": 3e-2}, "hidden_dim": {"values": [8, 16]}}
RAY = Path(sys.executable).parent / "ray"


def load_space(tune):
    return load_space_with(tune, searchable_keys())


def parse_space(space):
    return parse_space_with(space, searchable_keys())


def searched(tune):
    """The tiny model and train settings with the search settings ``tune``."""
    return TINY.model_copy(update={"tune": tune})


def settings(**changes):
    return PARAMS.tune.model_copy(update={"tokens": 9000, "eval_every": 3000, "num_samples": 6, "grace_period": 1, "reduction_factor": 2.0,
                                          "optimization_config": SPACE, **changes})


def write_params(tmp_path: Path, **tune) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["tune"].update(tune)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def language(length: int, seed: int) -> np.ndarray:
    """A small Markov language over 20 tokens that a model can learn something of."""
    rng = np.random.default_rng(seed)
    ids = [1]
    for _ in range(length - 1):
        ids.append((ids[-1] * 3 + 1) % 20 if rng.random() < 0.7 else int(rng.integers(0, 20)))
    return np.array(ids, dtype=np.int32)


def data() -> dict:
    valid = language(300, 1)
    return {"task": "lm", "train_ids": language(3000, 0), "valid_ids": valid, "valid_scored": np.ones(len(valid), bool),
            "vocab_size": 20, "vocab_sha256": "0" * 64}


@pytest.fixture
def tracking(tmp_path):
    import mlflow
    from mlflow import MlflowClient

    from seqlab.tracking import ChildRuns

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    client = MlflowClient()
    experiment = client.create_experiment("search", artifact_location=(tmp_path / "artifacts").as_uri())
    parent = client.create_run(experiment, run_name="tune")
    return ChildRuns(client, experiment, parent.info.run_id, "trial")


# --- the space ----------------------------------------------------------------------------------


def test_the_seed_space_file_is_the_gpu_profile():
    space = load_space(PARAMS.tune.model_copy(update={"space_file": str(REPO / "configs" / "tune_gpu.json")}))
    assert (space.name, space.tokens, space.rounds) == ("LSTMModelWithAttention", 20_000_000, 134)  # rounds of 150k
    dims = {d.key: d for d in space.dimensions}
    assert dims["lr"].targets == ("train.lr",) and dims["lr"].log and (dims["lr"].low, dims["lr"].high) == (1e-3, 1e-2)
    assert dims["num_layers"].targets == ("model.layers",) and not dims["num_layers"].log
    assert dims["hidden_dim"].values == (512, 1024) and dims["embedding_dim"].targets == ("model.embed_dim",)
    assert dims["batch_size"].targets == ("train.batch_size",)
    integer = check_space(space, PARAMS, vocab_size=16790)
    assert integer == {"lr": False, "num_layers": True, "hidden_dim": True, "embedding_dim": True, "batch_size": True}


def test_the_no_search_file_leaves_either_task_to_params_yaml():
    """configs/no_search.json: what `dvc exp run -S <section>.space_file=` uses to skip a search."""
    for section, task in (("tune", "lm"), ("seq2seq_tune", "seq2seq")):
        tune = getattr(PARAMS, section).model_copy(update={"space_file": str(REPO / "configs" / "no_search.json")})
        assert load_space_with(tune, searchable_keys(task)).dimensions == []


def test_the_state_sequence_file_searches_the_feedforward_models_reach():
    """configs/tune_state_sequences.json: the feed-forward n-gram, its reach (``memory``) and rate searched."""
    space = load_space(PARAMS.tune.model_copy(update={"space_file": str(REPO / "configs" / "tune_state_sequences.json")}))
    dims = {d.key: d for d in space.dimensions}
    assert dims["kind"].values == ("feedforward",) and dims["memory"].values == (1, 2, 3)
    assert dims["dropout"].values == (0.0,) and dims["lr"].log
    integer = check_space(space, PARAMS, vocab_size=43)
    assert integer["memory"] and integer["batch_size"] and not integer["lr"]


def test_any_model_or_train_key_can_be_searched():
    dims = {d.key: d for d in parse_space({"dropout": {"min": 0.1, "max": 0.5}, "attention": {"values": ["dot", "general"]},
                                            "bptt": {"values": [32, 64]}, "memory": {"min": 16, "max": 64, "log": True}})}
    assert dims["dropout"].targets == ("model.dropout_embed", "model.dropout_rnn", "model.dropout_out")
    assert dims["attention"].targets == ("model.attention",) and dims["bptt"].targets == ("train.bptt",)
    assert dims["memory"].log and not dims["dropout"].log
    config = {"dropout": 0.3, "bptt": 32}
    assert overrides(config, list(dims.values())) == {
        "model.dropout_embed": 0.3, "model.dropout_rnn": 0.3, "model.dropout_out": 0.3, "train.bptt": 32}


@pytest.mark.parametrize("space, expected", [
    ({"learning_rate": {"min": 1, "max": 2}}, "tune.optimization_config: learning_rate: unknown key; searchable keys: attention,"),
    ({"lr": {"min": 1.0e-2, "max": 1.0e-3}}, "tune.optimization_config: lr: min 0.01 is above its max 0.001"),
    ({"lr": {"min": 1.0e-3, "max": 1.0e-2, "step": 1}}, "tune.optimization_config: lr: unknown key 'step'"),
    ({"hidden_dim": {"values": []}}, "tune.optimization_config: hidden_dim: values must be a non-empty list (got [])"),
    ({"dropout": {"min": 0.0, "max": 0.5, "log": True}}, "tune.optimization_config: dropout: a log-uniform range needs min above 0"),
    ({"lr": {"min": "1e-3", "max": 0.01}}, "tune.optimization_config: lr: min and max must be numbers"),
    ({"tokens": {"values": [1, 2]}}, "tune.optimization_config: tokens: unknown key"),
    ({"lr": 0.01}, "tune.optimization_config.lr: Input should be a valid dictionary (got 0.01)"),
])
def test_a_bad_space_in_params_is_one_line_naming_the_key(tmp_path, space, expected):
    path = write_params(tmp_path, optimization_config=space)
    with pytest.raises(SeqLabError) as err:
        load_params(path)
    assert str(err.value).startswith(f"{path}: {expected}")


def test_grace_period_beyond_the_rounds_is_refused(tmp_path):
    with pytest.raises(SeqLabError, match=r"tune: grace_period 12 exceeds the 4 rounds of tokens / eval_every"):
        load_params(write_params(tmp_path, grace_period=12))


@pytest.mark.parametrize("content, expected", [
    ("{not json", "not valid JSON"),
    (json.dumps({"name": "x", "tokens": 300000, "optimization_config": {}, "trials": 4}), "trials: unknown key"),
    (json.dumps({"name": "x", "optimization_config": {}}), "missing key tokens"),
    (json.dumps({"name": "x", "tokens": 0, "optimization_config": {}}), "tokens: expected a whole number of at least tune.eval_every 150000"),
    (json.dumps({"name": "x", "epochs": 3, "optimization_config": {}}), "epochs: a trial's budget is counted in tokens now"),
    (json.dumps({"name": "x", "tokens": 300000, "optimization_config": {"lr": {"min": 0.1, "max": 0.01}}}),
     "optimization_config: lr: min 0.1 is above its max 0.01"),
])
def test_a_bad_space_file_is_one_line_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "space.json"
    path.write_text(content)
    with pytest.raises(SeqLabError) as err:
        load_space(PARAMS.tune.model_copy(update={"space_file": str(path)}))
    assert str(err.value).startswith(f"{path}: {expected}")


@pytest.mark.parametrize("space, expected", [
    ({"attention": {"values": ["dot", "cosine"]}}, "attention: 'cosine' is not a valid model.attention: Input should be"),
    ({"num_layers": {"min": 1, "max": 2.5}}, "num_layers: model.layers is a whole number; min and max must be too"),
    ({"dropout": {"min": 0.1, "max": 1.5}}, "dropout: 1.5 is not a valid model.dropout_embed: Input should be less than 1"),
    ({"div_value": {"values": [0.5]}}, "div_value: 0.5 is not a valid model.div_value"),
])
def test_values_outside_what_params_allow_are_refused_before_ray_starts(space, expected):
    spec = load_space(PARAMS.tune.model_copy(update={"optimization_config": space}))
    with pytest.raises(SeqLabError) as err:
        check_space(spec, TINY, vocab_size=20)
    assert str(err.value).startswith(f"params.yaml: tune.optimization_config.{expected}")


def test_the_best_config_goes_into_params_for_training(tmp_path):
    best = tmp_path / "best_config.json"
    best.write_text(json.dumps({"overrides": {"train.lr": 0.004, "model.layers": 1, "model.hidden_dim": 512}}))
    params, changes = tuned(PARAMS, best)
    assert (params.train.lr, params.model.layers, params.model.hidden_dim) == (0.004, 1, 512)
    assert params.train.tokens == PARAMS.train.tokens and changes["train.lr"] == 0.004
    best.write_text(json.dumps({"overrides": {"model.hidden": 512}}))
    with pytest.raises(SeqLabError, match=r"best_config.json: overrides.model.hidden: unknown key"):
        tuned(PARAMS, best)
    best.write_text(json.dumps({"overrides": {"model.layers": 0}}))
    with pytest.raises(SeqLabError, match=r"best_config.json: overrides: layers: Input should be greater than or equal to 1"):
        tuned(PARAMS, best)


# --- Ray ----------------------------------------------------------------------------------------


def test_search_with_asha_a_crashed_trial_and_a_child_run_per_trial(tmp_path, tracking, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(FAULT_ENV, str(marker))
    client, experiment, parent = tracking.client, tracking.experiment_id, tracking.parent_run_id
    result = run_search(load_space(settings()), searched(settings()), data(), tracking, tmp_path / "storage")
    table = result.trials
    assert marker.exists(), "the injected crash did not happen"
    assert len(table) == 6 and set(table["status"]) <= {"completed", "stopped by ASHA"}
    assert table["retries"].tolist().count(1) == 1 and table["retries"].sum() == 1  # one crash, retried, finished
    assert (table["rounds"] >= 1).all() and result.trial_rounds == table["rounds"].sum() < result.full_rounds == 18
    assert (table.loc[table.status == "completed", "rounds"] == 3).all() and "stopped by ASHA" in set(table["status"])
    assert result.best["valid_loss"] == table["valid_loss"].min() and result.best["trial"] == table.iloc[0]["trial"]
    assert set(result.best["config"]) == {"lr", "hidden_dim"} and result.best["config"]["hidden_dim"] in (8, 16)
    assert result.resources == {"cpu": 1.0, "gpu": 0.0} and result.cluster == "a local Ray instance"

    children = client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")
    assert len(children) == 6 and {r.data.tags["seqlab.run_kind"] for r in children} == {"trial"}
    assert {r.info.status for r in children} == {"FINISHED"}
    for run in children:
        row = table.set_index("mlflow_run_id").loc[run.info.run_id]
        history = client.get_metric_history(run.info.run_id, "round_valid_ppl")
        assert sorted(m.step for m in history) == list(range(1, row["rounds"] + 1))  # once per round, also after the retry
        assert run.data.metrics["valid_ppl"] == pytest.approx(row["valid_ppl"])
        assert float(run.data.params["lr"]) == pytest.approx(row["lr"]) and int(run.data.params["hidden_dim"]) == row["hidden_dim"]
    plot_search(table, load_space(settings()), tmp_path / "tune.png")
    assert (tmp_path / "tune.png").read_bytes()[:4] == b"\x89PNG"


def test_the_encoder_decoder_is_searched_by_the_same_engine(tmp_path, tracking):
    """The seq2seq task's search: pairs written by the pairs stage, its own section and keys (the
    seed's num_layers sets both stacks), trials of the encoder-decoder, the best config into params."""
    from helpers import write_pairs
    from seqlab.pairs import load_pair_files, write_pairs as save_pairs
    from seqlab.tune.search import pair_search_data
    from seqlab.vocab import PAIR_SPECIALS, build_vocab, save_vocab

    write_pairs(tmp_path / "pairs")
    folder = tmp_path / "seq2seq"
    splits = load_pair_files(tmp_path / "pairs", source_chars=True).splits
    for split, pairs in splits.items():
        save_pairs(pairs, folder / f"{split}.tsv")
    for side in ("source", "target"):
        save_vocab(build_vocab([getattr(p, side) for p in splits["train"]], specials=PAIR_SPECIALS), folder / f"{side}_vocab",
                   specials=PAIR_SPECIALS)
    data = pair_search_data(folder, train_tokens=None)
    assert data["task"] == "seq2seq" and len(data["train_pairs"]) == len(splits["train"])
    assert len(pair_search_data(folder, train_tokens=30, seed=1)["train_pairs"]) < len(data["train_pairs"])

    space_spec = {"lr": {"min": 1e-3, "max": 1e-2}, "num_layers": {"values": [1, 2]}, "attention": {"values": ["dot", "general"]}}
    seq2seq_tune = PARAMS.seq2seq_tune.model_copy(update={"tokens": 120, "eval_every": 60, "num_samples": 3,
                                                          "optimization_config": space_spec})
    params = with_changes(PARAMS, {"seq2seq.embed_dim": 8, "seq2seq.hidden_dim": 8, "seq2seq.heads": 2,
                                   "seq2seq_train.batch_size": 4, "seq2seq_train.eval_batch_size": 4}, "tiny", "seq2seq")
    params = params.model_copy(update={"seq2seq_tune": seq2seq_tune})
    space = load_space_with(seq2seq_tune, searchable_keys("seq2seq"), section="seq2seq_tune")
    assert space.source == "params.yaml: seq2seq_tune.optimization_config"
    assert {d.key: d.targets for d in space.dimensions}["num_layers"] == ("seq2seq.encoder_layers", "seq2seq.decoder_layers")
    result = run_search(space, params, data, tracking, tmp_path / "storage")
    assert len(result.trials) == 3 and set(result.trials["status"]) <= {"completed", "stopped by ASHA"}
    assert np.isfinite(result.trials["valid_loss"].dropna()).all() and result.best["valid_ppl"] >= 1.0
    best = tmp_path / "best.json"
    best.write_text(json.dumps({"overrides": overrides(result.best["config"], space.dimensions)}))
    tuned_params, changes = tuned(params, best, "seq2seq")
    assert tuned_params.seq2seq.encoder_layers == tuned_params.seq2seq.decoder_layers == result.best["config"]["num_layers"]
    assert tuned_params.seq2seq.attention == result.best["config"]["attention"] and tuned_params.model == params.model
    with pytest.raises(ValueError, match=r"^bptt: unknown key"):  # the language model's key
        parse_space_with({"bptt": {"values": [8]}}, searchable_keys("seq2seq"))
    bad = load_space_with(seq2seq_tune.model_copy(update={"optimization_config": {"hidden_dim": {"values": [8, 9]}}}),
                          searchable_keys("seq2seq"), section="seq2seq_tune")
    with pytest.raises(SeqLabError, match=r"^params.yaml: seq2seq_tune.optimization_config.hidden_dim: 9 is not a valid seq2seq.hidden_dim"):
        check_space(bad, params, 20, "seq2seq")


def test_a_gpu_that_is_not_there_fails_fast_unless_fallback_is_allowed(tmp_path, tracking):
    started = time.perf_counter()
    with pytest.raises(SeqLabError, match=r"^params.yaml: tune.gpus_per_trial: trials ask for 1 GPU, but the Ray cluster has none"):
        run_search(load_space(settings()), searched(settings(gpus_per_trial=1.0, gpu_fallback=False)), data(), tracking, tmp_path)
    with pytest.raises(SeqLabError, match=r"^params.yaml: tune.cpus_per_trial: trials ask for 64 CPUs, but the Ray cluster has"):
        run_search(load_space(settings()), searched(settings(cpus_per_trial=64.0)), data(), tracking, tmp_path)
    assert time.perf_counter() - started < 90
    client, experiment, parent = tracking.client, tracking.experiment_id, tracking.parent_run_id
    assert not client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("where", ["params", "env"])
def test_an_unreachable_cluster_is_an_error_within_seconds(tmp_path, tracking, monkeypatch, where):
    address = f"127.0.0.1:{free_port()}"
    if where == "env":
        monkeypatch.setenv("RAY_ADDRESS", address)
    started = time.perf_counter()
    with pytest.raises(SeqLabError) as err:
        run_search(load_space(settings()), searched(settings(address=address if where == "params" else None)), data(), tracking, tmp_path)
    source = "params.yaml: tune.address" if where == "params" else "RAY_ADDRESS"
    assert str(err.value).startswith(f"{source}: cannot reach the Ray cluster at {address} (Connection refused)")
    assert time.perf_counter() - started < 10


def test_optuna_search_on_an_existing_cluster(tmp_path, tracking, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")  # a driver given an address sends the token only when told (README)
    port = free_port()
    temp = Path(f"/tmp/seqlab-ray-{os.getpid()}")  # Ray's socket paths must stay short
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([str(RAY), "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    f"--temp-dir={temp}"], check=True, capture_output=True, env=env, timeout=180)
    try:
        result = run_search(load_space(settings()), searched(settings(search="optuna", num_samples=3, address=f"127.0.0.1:{port}")), data(), tracking, tmp_path / "storage")
        assert result.cluster == f"the Ray cluster at 127.0.0.1:{port}"
        assert len(result.trials) == 3 and result.trials["valid_ppl"].notna().all()
        assert len(set(result.trials["lr"])) == 3  # TPE samples, not one point thrice
        logs = list((temp / "session_latest" / "logs").glob("worker-*.out"))
        assert logs, "no trial ran on the started cluster"
    finally:
        stop_cluster(temp)
        shutil.rmtree(temp, ignore_errors=True)


def stop_cluster(temp: Path) -> None:
    """Kill the processes of the cluster started with ``temp`` as its temp dir, and only those.

    `ray stop` would kill every Ray process of the machine's user: a pipeline running beside the tests too.
    """
    import psutil

    started = [p for p in psutil.process_iter(["cmdline"]) if any(str(temp) in arg for arg in p.info["cmdline"] or ())]
    processes = {}
    for process in started:
        with contextlib.suppress(psutil.NoSuchProcess):
            processes.update({p.pid: p for p in (process, *process.children(recursive=True))})
    for process in processes.values():
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(list(processes.values()), timeout=30)
