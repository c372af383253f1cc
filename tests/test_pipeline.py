"""End to end: `dvc repro` on a tiny corpus in a fresh git + DVC project, as a user runs it."""

import contextlib
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from seqlab.io import dvc_md5
from helpers import BIN, REPO, copy_project, dvc, env, free_port, make_project, runs, sh

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = make_project(tmp_path_factory.mktemp("project"), validate__max_oov_rate=0.5)
    dvc(root, "repro")
    return root


def test_repro_writes_every_stage_output(project):
    for split in ("train", "valid", "test"):
        assert (project / "data" / "prepared" / f"{split}.txt").exists()
        assert (project / "data" / "tokens" / f"{split}.txt").exists()
        assert (project / "data" / "tokens" / f"{split}.stats.parquet").exists()
    assert (project / "data" / "tokens" / "train.txt").read_text().splitlines()[0] == "the cat sat on the mat ."
    metrics = yaml.safe_load((project / "metrics" / "vocab.json").read_text())
    assert metrics["vocab_size"] == 3 + 11 and metrics["test_oov_tokens"] == 0
    assert metrics["valid_oov_rate"] == 0.0 and metrics["valid_tokens"] == 11
    result = json.loads((project / "data" / "validation" / "result.json").read_text())
    assert result["success"] is True and len(result["tables"]) == 5
    assert (project / "data" / "validation" / "docs" / "index.html").exists()


def test_one_parent_run_with_a_child_per_stage(project):
    frame = runs(project)
    parents = frame[frame["tags.mlflow.parentRunId"].isna()]
    children = frame[frame["tags.mlflow.parentRunId"] == parents.iloc[0]["run_id"]]
    assert len(parents) == 1 and parents.iloc[0]["status"] == "FINISHED"
    grid = [f"ngram {e}-{o}" for o in (1, 3) for e in ("mle", "laplace", "addk", "jm", "backoff", "kn", "mkn")]
    names = list(children["tags.mlflow.runName"])
    side_by_side = {"seq2seq attention", "seq2seq none", "seq2seq transformer"}  # the seq2seq stage's models, trained at once
    assert [n for n in names if n not in side_by_side] == ["prepare", "tokenize", "vocab", "validate", *grid, "tune", "train lstm-dot",
                                                           "train lstm", "train transformer", "hybrid", "evaluate", "pairs",
                                                           "pairs_validate", "seq2seq_tune", "seq2seq_evaluate", "register"]
    assert sorted(names[names.index("seq2seq_tune") + 1:names.index("seq2seq_evaluate")]) == sorted(side_by_side)
    by_name = children.set_index("tags.mlflow.runName")
    trials = frame[frame["tags.mlflow.parentRunId"] == by_name.loc["tune", "run_id"]]
    seq2seq_trials = frame[frame["tags.mlflow.parentRunId"] == by_name.loc["seq2seq_tune", "run_id"]]
    assert len(trials) == 2 and len(seq2seq_trials) == 2  # the trials are each search's children
    assert len(frame) == 1 + len(children) + len(trials) + len(seq2seq_trials)
    assert set(children["status"]) == {"FINISHED"}
    commit = sh(project, "git", "rev-parse", "HEAD").stdout.strip()
    assert set(frame["tags.mlflow.source.git.commit"]) == {commit}
    assert parents.iloc[0]["params.tokenize.kind"] == "word"
    vocab_run = children[children["tags.mlflow.runName"] == "vocab"].iloc[0]
    assert vocab_run["params.vocab.min_freq"] == "1" and vocab_run["metrics.vocab_size"] == 14


def test_data_hash_tags_equal_dvc_lock(project):
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    names = runs(project)["tags.mlflow.runName"].str.replace("train lstm-dot", "train")
    frame = runs(project).set_index(names)
    for stage, run in (("prepare", "prepare"), ("tokenize", "tokenize"), ("vocab", "vocab"), ("validate", "validate"),
                       ("train", "train"), ("ngram", "ngram mkn-3")):
        for out in lock[stage]["outs"]:
            if stage != "ngram":
                assert frame.loc[run, f"tags.dvc.outs.{out['path']}"] == out["md5"]
        for dep in lock[stage]["deps"]:
            if dep["path"].startswith("data/") and f"tags.dvc.deps.{dep['path']}" in frame.columns:
                assert frame.loc[run, f"tags.dvc.deps.{dep['path']}"] == dep["md5"]
    # an n-gram model's run tags its own folder, one of the grid's output
    assert frame.loc["ngram mkn-3", "tags.dvc.outs.models/ngram/mkn-3"] == dvc_md5(project / "models" / "ngram" / "mkn-3")
    assert [out["path"] for out in lock["ngram"]["outs"]] == ["models/ngram"]


def test_logged_dataset_inputs(project):
    from mlflow import MlflowClient

    frame = runs(project).set_index("tags.mlflow.runName")
    inputs = MlflowClient().get_run(frame.loc["tokenize", "run_id"]).inputs.dataset_inputs
    assert sorted(i.dataset.name for i in inputs) == ["test.stats", "train.stats", "valid.stats"]


def test_second_repro_changes_nothing(project):
    lock = (project / "dvc.lock").read_text()
    before = len(runs(project))
    result = dvc(project, "repro")
    assert "Data and pipelines are up to date." in result.stdout
    assert (project / "dvc.lock").read_text() == lock
    assert len(runs(project)) == before
    assert dvc(project, "status").stdout.strip() == "Data and pipelines are up to date."


def test_param_change_reruns_only_what_it_touches_under_a_new_parent(project, tmp_path):
    project = copy_project(project, tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ngram"]["orders"] = [1, 2, 3]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    before = runs(project)
    result = dvc(project, "repro")
    assert "ngram mkn-3: built from the same inputs; kept" in result.stdout and "ngram mkn-2: valid ppl" in result.stdout
    assert "ngram: 7 of 21 models built, 14 kept" in result.stdout
    new = runs(project).iloc[len(before):]
    names = list(new["tags.mlflow.runName"].str.replace(r"^pipeline .*", "pipeline", regex=True))
    grid = [f"ngram {e}-2" for e in ("mle", "laplace", "addk", "jm", "backoff", "kn", "mkn")]
    assert names == ["pipeline", *grid, "hybrid", "evaluate", "register"]  # the hybrid may now pick mkn-2
    board = pd.read_csv(project / "metrics" / "leaderboard.csv")
    assert len(board) == 21 + 3 + 1  # the neural models were not retrained, and are still on the board


def test_leaderboard_scores_every_model_on_the_same_tokens(project):
    board = pd.read_csv(project / "metrics" / "leaderboard.csv")
    assert len(board) >= 14 + 3 + 1 and board["test_tokens"].nunique() == 1
    assert board["test_tokens"].iloc[0] == 15  # 13 tokens + 2 </s>
    assert {"lstm-dot", "lstm", "transformer", "hybrid"} <= set(board.model)
    assert set(board.family) == {"ngram", "neural", "hybrid"}
    smoothed = board[board.estimator != "mle"]
    assert (smoothed.test_ppl < float("inf")).all()
    assert board.set_index("model").loc["ngram-mle-3", "test_zero_prob_tokens"] > 0
    assert list(board["valid_ppl"]) == sorted(board["valid_ppl"])
    metrics = json.loads((project / "metrics" / "metrics.json").read_text())
    assert metrics["best_model"] == board.model.iloc[0] and metrics["models"]["ngram-mle-3"]["test_ppl"] == "inf"
    assert set(metrics["models"]) == set(board.model)
    assert set(metrics["models"]["hybrid"]) == {"valid_ppl", "valid_xent_nats", "valid_xent_bits", "test_ppl", "test_xent_nats",
                                                "test_xent_bits", "test_bits_per_char"}
    for name in ("plots/perplexity.png", "plots/learning_curves.png", "plots/hybrid.png"):
        assert (project / name).read_bytes()[:4] == b"\x89PNG"
    curves = pd.read_csv(project / "metrics" / "learning_curves.csv")
    assert list(curves.columns) == ["round", "tuned", "lstm", "transformer"] and list(curves["round"]) == [1, 2]
    neural = board.set_index("model").loc["lstm-dot"]
    scores = json.loads((project / "models" / "neural" / "scores.json").read_text())
    assert neural.family == "neural" and neural.test_ppl == pytest.approx(scores["test"]["ppl"], rel=1e-5)
    ngram = json.loads((project / "models" / "ngram" / "mkn-3" / "scores.json").read_text())
    assert scores["test"]["fingerprint"] == ngram["test"]["fingerprint"] and scores["test"]["tokens"] == 15


def test_train_stage_outputs_metrics_and_learning_curve(project):
    assert (project / "models" / "neural" / "model.pt").stat().st_size > 1000
    history = pd.read_csv(project / "metrics" / "train_history.csv")
    assert list(history["round"]) == [1, 2] and (history.valid_ppl > 1).all() and history.steps.iloc[-1] == 12  # 200 tokens in steps of 2 x 8
    metrics = json.loads((project / "metrics" / "train.json").read_text())
    assert metrics["model"] == "lstm-dot" and metrics["valid_ppl"] == pytest.approx(history.valid_ppl.min(), rel=1e-5)  # the CSV keeps 6 digits
    assert (project / "plots" / "learning_curve.png").stat().st_size > 1000
    assert not (project / "checkpoints" / "train").exists()  # resume state is removed once training is done
    shown = dvc(project, "metrics", "show", "--json").stdout
    assert '"metrics/train.json"' in shown


def test_tune_stage_searches_and_train_retrains_the_best_config(project):
    best = json.loads((project / "models" / "tune" / "best_config.json").read_text())
    trials = pd.read_csv(project / "metrics" / "tune_trials.csv")
    assert len(trials) == 2 and set(trials["status"]) <= {"completed", "stopped by ASHA"}
    assert best["trial"] == trials.iloc[0]["trial"] and best["valid_ppl"] == pytest.approx(trials["valid_ppl"].min(), rel=1e-5)
    assert set(best["overrides"]) == {"train.lr", "model.hidden_dim"} and best["name"] == "LSTMModelWithAttention"
    metrics = json.loads((project / "metrics" / "tune.json").read_text())
    assert metrics["trials"] == 2 and metrics["full_trial_rounds"] == 4 and metrics["trial_rounds"] == trials["rounds"].sum()
    assert metrics["best.hidden_dim"] == best["overrides"]["model.hidden_dim"]
    assert (project / "plots" / "tune.png").read_bytes()[:4] == b"\x89PNG"
    scores = json.loads((project / "models" / "neural" / "scores.json").read_text())
    assert scores["tuned"] == best["overrides"] and scores["config"]["hidden_dim"] == best["overrides"]["model.hidden_dim"]
    assert scores["train"]["lr"] == best["overrides"]["train.lr"] and scores["train"]["tokens"] == 200  # params' full budget
    frame = runs(project)
    search = frame.set_index("tags.mlflow.runName").loc["tune"]
    children = frame[frame["tags.mlflow.parentRunId"] == search["run_id"]]
    assert set(children["tags.seqlab.run_kind"]) == {"trial"} and set(children["run_id"]) == set(trials["mlflow_run_id"])
    assert search["metrics.trials"] == 2 and frame.set_index("tags.mlflow.runName").loc["train lstm-dot", "tags.seqlab.tuned"]


def test_an_empty_space_skips_the_search_and_trains_params_as_written(tmp_path):
    root = make_project(tmp_path, tune__optimization_config={}, validate__max_oov_rate=0.5)
    result = dvc(root, "repro", "train")
    assert "tune: optimization_config is empty; train uses params.yaml as is" in result.stdout
    assert json.loads((root / "models" / "tune" / "best_config.json").read_text())["overrides"] == {}
    scores = json.loads((root / "models" / "neural" / "scores.json").read_text())
    assert scores["tuned"] == {} and scores["config"]["hidden_dim"] == 16


def test_training_run_logs_rounds_and_registers_a_model(project):
    import mlflow

    frame = runs(project).set_index("tags.mlflow.runName")
    run_id = frame.loc["train lstm-dot", "run_id"]
    client = mlflow.MlflowClient()
    assert [m.step for m in client.get_metric_history(run_id, "round_valid_ppl")] == [1, 2]  # per round ...
    logged = client.get_run(run_id).data.metrics
    assert {"train_loss", "valid_loss", "tokens_per_s", "lr", "test_ppl", "test_xent_bits"} <= set(logged)
    assert logged["valid_ppl"] == pytest.approx(min(m.value for m in client.get_metric_history(run_id, "round_valid_ppl")))  # ... and of the best
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"learning_curve.png", "train_history.csv", "scores.json"} <= artifacts
    [version] = client.search_model_versions("name='seqlab-lstm_attention'")
    assert version.tags["model"] == "lstm-dot" and version.run_id == run_id

    served = mlflow.pyfunc.load_model(f"models:/seqlab-lstm_attention/{version.version}")  # the pyfunc every family is
    from seqlab.models.checkpoint import load_checkpoint
    from seqlab.models.neural_lm import stream_log_probs
    from seqlab.vocab import load_vocab

    vocab = load_vocab(project / "data" / "vocab")
    checkpoint = load_checkpoint(project / "models" / "neural" / "model.pt", vocab.sha256)
    contexts = ["<s> the cat", "<s> a dog sat on the"]
    rows = served.predict(pd.DataFrame({"context": contexts}), params={"top_k": 0})
    for i, context in enumerate(contexts):
        mine = rows[rows.context_index == i].set_index("token")["probability"]
        assert mine.sum() == pytest.approx(1.0, abs=1e-6)
        ids = vocab.encode(context.split())
        for token in ("mat", "sat", "."):  # what the scoring path gives the token after the context
            scored = stream_log_probs(checkpoint, np.array([*ids, vocab.index[token]]), batch_size=1)[-1]
            assert mine.get(token, 0.0) == pytest.approx(np.exp(scored), abs=1e-6)

    by_path = sh(project, str(BIN / "seqlab"), "predict", "--context", "the cat sat on the", "--top-k", "3")
    by_uri = sh(project, str(BIN / "seqlab"), "predict", "--model", "models:/seqlab-lstm_attention/1", "--context", "the cat sat on the", "--top-k", "3")
    assert by_uri.stdout == by_path.stdout and len(by_path.stdout.splitlines()) == 3
    missing = sh(project, str(BIN / "seqlab"), "predict", "--model", "models:/seqlab-lstm_attention/7", "--context", "the", check=False)
    assert missing.returncode == 1 and last_line(missing).startswith("error: models:/seqlab-lstm_attention/7: cannot fetch the model")


def test_cutoffs_beyond_the_vocabulary_are_fitted_to_it_and_said_in_one_line(project, tmp_path):
    project = copy_project(project, tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["model"]["cutoffs"] = [5, 40]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = sh(project, sys.executable, "pipelines/train.py")
    assert "train lstm-dot: model.cutoffs [5, 40] do not fit the vocabulary of 14: the adaptive softmax uses cut-offs [5]" in result.stdout
    scores = json.loads((project / "models" / "neural" / "scores.json").read_text())
    assert scores["config"]["output"] == "adaptive" and scores["config"]["cutoffs"] == [5]


def test_the_seq2seq_task_searches_trains_decodes_and_compares_attention_with_none(project):
    metrics = json.loads((project / "metrics" / "pairs.json").read_text())
    assert (metrics["train_sources"], metrics["valid_sources"], metrics["test_sources"]) == (14, 2, 3)
    best = json.loads((project / "models" / "seq2seq_tune" / "best_config.json").read_text())
    trials = pd.read_csv(project / "metrics" / "seq2seq" / "tune_trials.csv")
    assert len(trials) == 2 and set(best["overrides"]) == {"seq2seq_train.lr", "seq2seq.hidden_dim"}
    assert best["valid_ppl"] == pytest.approx(trials.valid_ppl.min(), rel=1e-5)
    for name, attention, kind in (("attention", "additive", "rnn"), ("none", "none", "rnn"), ("transformer", "additive", "transformer")):
        folder = project / "models" / "seq2seq" / name
        scores = json.loads((folder / "scores.json").read_text())
        assert (scores["config"]["attention"], scores["config"]["kind"], scores["task"]) == (attention, kind, "seq2seq")
        assert scores["tuned"] == best["overrides"]
        if kind == "rnn":  # the search's hidden_dim; the transformer baseline sets its own
            assert scores["config"]["hidden_dim"] == best["overrides"]["seq2seq.hidden_dim"]
        assert scores["test"]["sources"] == 3 and scores["test"]["target_tokens"] == 9 + 3  # </s> counted
        assert 0.0 <= scores["test"]["wer"] <= 1.0 and math.isfinite(scores["test"]["target_ppl"])
        hypotheses = pd.read_csv(folder / "test_hypotheses.tsv", sep="\t", keep_default_na=False)
        assert sorted(hypotheses.source) == ["d o t", "s a d", "t o g"]
        for written in (f"metrics/seq2seq/models/{name}.json", f"metrics/seq2seq/history/{name}.csv", f"plots/seq2seq/curves/{name}.png"):
            assert (project / written).stat().st_size > 0
        assert json.loads((project / "metrics" / "seq2seq" / "models" / f"{name}.json").read_text())["test_wer"] == scores["test"]["wer"]
    board = pd.read_csv(project / "metrics" / "seq2seq" / "leaderboard.csv")
    assert sorted(board.model) == ["seq2seq-attention", "seq2seq-none", "seq2seq-transformer"] and list(board["rank"]) == [1, 2, 3]
    assert board.set_index("model").loc["seq2seq-transformer", ["kind", "attention", "rnn"]].tolist() == ["transformer", "multihead", "-"]
    by_length = pd.read_csv(project / "metrics" / "seq2seq" / "wer_by_length.csv")
    assert list(by_length.source_length) == [3] and list(by_length.sources) == [3]
    assert (project / "plots" / "seq2seq" / "wer_by_length.png").stat().st_size > 0
    out = sh(project, str(BIN / "seqlab"), "transduce", "dot", "TOG", "--beam", "3", "--nbest", "2", "--visualize", "alignment.png")
    lines = [line.split("\t") for line in out.stdout.splitlines() if "\t" in line]
    assert [line[:2] for line in lines] == [["dot", "1"], ["dot", "2"], ["TOG", "1"], ["TOG", "2"]]
    assert float(lines[0][3]) >= float(lines[1][3])  # best first
    assert (project / "alignment.png").stat().st_size > 0
    sh(project, str(BIN / "seqlab"), "transduce", "dot", "--model", "models/seq2seq/transformer", "--visualize", "transformer.png")
    assert (project / "transformer.png").stat().st_size > 0  # the last decoder layer's source attention
    refused = sh(project, str(BIN / "seqlab"), "transduce", "dot", "--model", "models/seq2seq/none", "--visualize", "a.png", check=False)
    assert refused.returncode == 1 and refused.stderr.strip() == "error: models/seq2seq/none: this model has no attention to draw (seq2seq.attention: none)"


def test_the_seq2seq_task_has_its_own_champion_gated_by_wer_and_served_as_a_pyfunc(project):
    import mlflow

    client = registry(project)
    board = pd.read_csv(project / "metrics" / "seq2seq" / "leaderboard.csv")
    name, version = champion_of(client, "seq2seq")
    best = board.sort_values(["valid_wer", "model"]).iloc[0]
    assert name == f"seqlab-seq2seq_{'transformer' if best.kind == 'transformer' else best.attention}"
    tags = client.get_model_version(name, version).tags
    assert tags["task"] == "seq2seq" and float(tags["test_wer"]) == pytest.approx(best.test_wer)
    decision = json.loads((project / "metrics" / "seq2seq" / "register.json").read_text())
    assert decision["outcome"] == "promoted" and decision["candidate"]["test_wer"] == pytest.approx(best.test_wer)
    for family in ("seq2seq_additive", "seq2seq_none", "seq2seq_transformer"):
        assert len(client.search_model_versions(f"name = 'seqlab-{family}'")) == 1
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    answer = model.predict(pd.DataFrame({"source": ["dot", "sad"]}), params={"beam": 3, "nbest": 2})
    assert list(answer.columns) == ["source_index", "rank", "hypothesis", "score"]
    assert list(answer.source_index) == [0, 0, 1, 1] and list(answer["rank"]) == [1, 2, 1, 2]
    cli = sh(project, str(BIN / "seqlab"), "transduce", "dot", "--beam", "3", "--model", best.path).stdout.split("\t")
    assert answer.hypothesis.iloc[0] == cli[1] and answer.score.iloc[0] == pytest.approx(float(cli[2]), abs=1e-4)


def test_every_ngram_model_is_registered_and_predicts_next_tokens(project):
    import mlflow

    runs(project)  # points MLflow at the project's store
    versions = mlflow.MlflowClient().search_model_versions("name='seqlab-ngram'")
    assert len(versions) >= 14
    mkn = [v for v in versions if v.tags["estimator"] == "mkn" and v.tags["order"] == "3"][0]
    model = mlflow.pyfunc.load_model(f"models:/seqlab-ngram/{mkn.version}")
    out = model.predict(pd.DataFrame({"context": ["<s> the cat", "on the"]}), params={"top_k": 0})
    assert set(out.context_index) == {0, 1}
    assert out.groupby("context_index").probability.sum().tolist() == pytest.approx([1.0, 1.0], abs=1e-9)
    assert out[out.context_index == 1].sort_values("probability").token.iloc[-1] in {"mat", "log"}


def test_kenlm_scores_the_pipeline_arpa_like_the_leaderboard(project):
    import kenlm

    model = kenlm.Model(str(project / "models" / "ngram" / "mkn-3" / "model.arpa"))
    lines = (project / "data" / "tokens" / "test.txt").read_text().splitlines()
    kenlm_log10 = sum(model.score(line, bos=True, eos=True) for line in lines)
    scores = json.loads((project / "models" / "ngram" / "mkn-3" / "scores.json").read_text())
    assert kenlm_log10 * math.log(10) == pytest.approx(-scores["test"]["nll_nats"], abs=1e-4)


def outputs(root: Path) -> dict[str, str]:
    """Every output dvc.lock lists, with the hash of what is there now."""
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    paths = sorted({out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])})
    return {path: dvc_md5(root / path) if (root / path).exists() else None for path in paths}


def test_a_refused_param_or_input_leaves_every_earlier_output_in_place(project, tmp_path):
    """DVC deletes a stage's outputs before running it unless they persist: every one does, and a
    stage refused at its start, or part way through, leaves the last good run's outputs as they were."""
    project = copy_project(project, tmp_path / "project")
    before = outputs(project)
    assert len(before) > 40 and None not in before.values()
    good = (project / "params.yaml").read_text()
    params = yaml.safe_load(good)
    params["train"]["epochs"] = 0  # a typo: train has no epochs
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    refused = dvc(project, "repro", check=False)
    assert refused.returncode != 0 and "error: params.yaml: train.epochs: unknown key" in refused.stderr
    assert outputs(project) == before

    (project / "params.yaml").write_text(good)
    corpus = (project / "data" / "corpus" / "valid.txt").read_bytes()
    (project / "data" / "corpus" / "valid.txt").write_bytes(b"the cat \xff sat\n")  # refused once prepare reads it
    refused = dvc(project, "repro", check=False)
    assert refused.returncode != 0 and "not UTF-8 text" in refused.stderr
    assert outputs(project) == before

    (project / "data" / "corpus" / "valid.txt").write_bytes(corpus)
    params["train"].pop("epochs")
    params["seq2seq_baselines"]["broken"] = {"attention": "bahdanau"}  # refused as params.yaml is read, before any model trains
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    refused = dvc(project, "repro", check=False)
    assert refused.returncode != 0
    assert "error: params.yaml: seq2seq_baselines.broken: attention: Input should be" in refused.stderr and "(got 'bahdanau')" in refused.stderr
    assert outputs(project) == before


def test_the_grid_drops_what_it_no_longer_holds_and_rebuilds_what_was_removed(project, tmp_path):
    project = copy_project(project, tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ngram"]["estimators"] = ["kn", "mkn"]
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    shutil.rmtree(project / "models" / "ngram" / "kn-3")
    before = len(runs(project))
    result = sh(project, sys.executable, "pipelines/ngram.py")
    assert "ngram addk-1: no longer in the grid (params.yaml: ngram.estimators, ngram.orders); removed" in result.stdout
    assert "ngram: 1 of 4 models built, 3 kept" in result.stdout and "ngram kn-3: valid ppl" in result.stdout
    assert sorted(p.name for p in (project / "models" / "ngram").iterdir()) == ["kn-1", "kn-3", "mkn-1", "mkn-3"]
    assert len(runs(project)) == before + 2  # the rebuilt model's run, under a new pipeline run


def test_the_grid_on_the_ray_engine_scores_as_the_local_one(project, tmp_path):
    project = copy_project(project, tmp_path / "project")
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["ngram"].update(engine="ray", partitions=2)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    local = {p.name: json.loads((p / "scores.json").read_text()) for p in (project / "models" / "ngram").iterdir()}
    shutil.rmtree(project / "models" / "ngram")
    result = sh(project, sys.executable, "pipelines/ngram.py")
    assert "ngram: counting and estimating on a local Ray instance (ngram.engine: ray)" in result.stdout
    assert "into 2 partition(s)" in result.stdout and "ngram: 14 of 14 models built, 0 kept" in result.stdout
    for name, want in local.items():
        got = json.loads((project / "models" / "ngram" / name / "scores.json").read_text())
        for split in ("valid", "test"):
            assert got[split]["fingerprint"] == want[split]["fingerprint"]
            same = got[split]["nll_nats"] is None if want[split]["nll_nats"] is None else (  # None: infinite (mle's zeros)
                got[split]["nll_nats"] == pytest.approx(want[split]["nll_nats"], rel=1e-9))
            assert same, (name, split)
    parquet = {p.relative_to(project / "models" / "ngram").as_posix() for p in (project / "models" / "ngram").rglob("*.parquet")}
    layout = {1: ["order=1/part-00000"], 3: ["order=1/part-00000", *[f"order={k}/part-0000{p}" for k in (2, 3) for p in (0, 1)]]}
    assert parquet == {f"{e}-{o}/ngrams/{f}.parquet" for e in ("kn", "mkn") for o in (1, 3) for f in layout[o]}


def test_baselines_are_the_tuned_model_with_their_changes_and_the_same_budget(project):
    tuned = json.loads((project / "models" / "neural" / "scores.json").read_text())
    lstm = json.loads((project / "models" / "baselines" / "lstm" / "scores.json").read_text())
    transformer = json.loads((project / "models" / "baselines" / "transformer" / "scores.json").read_text())
    assert lstm["config"] == {**tuned["config"], "attention": "none"} and lstm["train"] == tuned["train"]
    assert transformer["config"]["kind"] == "transformer" and transformer["train"] == tuned["train"]
    assert transformer["config"]["embed_dim"] == tuned["config"]["embed_dim"]
    assert [r["round"] for r in lstm["history"]] == [1, 2]
    assert (lstm["registered_model"], transformer["registered_model"]) == ("seqlab-lstm", "seqlab-transformer")
    assert json.loads((project / "metrics" / "baselines" / "lstm.json").read_text())["model"] == "lstm"
    assert (project / "plots" / "baselines" / "transformer.png").read_bytes()[:4] == b"\x89PNG"


def test_hybrid_interpolates_the_best_neural_model_with_the_n_gram_whose_mix_is_best_on_valid(project):
    spec = json.loads((project / "models" / "hybrid" / "hybrid.json").read_text())
    hybrid = json.loads((project / "models" / "hybrid" / "scores.json").read_text())
    board = pd.read_csv(project / "metrics" / "leaderboard.csv").set_index("model")
    [neural, ngram] = [part["model"] for part in spec["parts"]]
    assert neural == board[board.family == "neural"].valid_ppl.idxmin()
    candidates = spec["fit"]["candidates_valid_nats"]  # hybrid.ngram: best, each estimator at its best order
    assert sorted(candidates) == sorted(board[board.family == "ngram"].groupby("estimator").valid_ppl.idxmin())
    assert ngram == min(candidates, key=candidates.get)
    assert hybrid["valid"]["xent_nats"] == pytest.approx(candidates[ngram], abs=1e-6)
    assert sum(part["weight"] for part in spec["parts"]) == pytest.approx(1.0)
    parts = [json.loads((project / part["file"]).parent.joinpath("scores.json").read_text()) for part in spec["parts"]]
    assert hybrid["valid"]["xent_nats"] <= min(part["valid"]["xent_nats"] for part in parts) + 1e-12  # never worse than a part
    assert hybrid["test"]["fingerprint"] == json.loads((project / "models" / "neural" / "scores.json").read_text())["test"]["fingerprint"]
    scored = sh(project, str(BIN / "seqlab"), "score", "models/hybrid").stdout
    assert f"perplexity {hybrid['test']['ppl']:.4f}" in scored  # the CLI and the stage agree to the digit


def registry(project):
    import mlflow

    runs(project)  # points MLflow at the project's store
    return mlflow.MlflowClient()


def champion_of(client, task="lm"):
    holders = [(m.name, m.aliases["champion"]) for m in client.search_registered_models("name LIKE 'seqlab-%'") if "champion" in m.aliases
               and client.get_model_version(m.name, m.aliases["champion"]).tags.get("task") == task]
    assert len(holders) == 1, holders
    return holders[0]


def test_every_family_is_registered_with_what_it_was_built_from(project):
    client = registry(project)
    lock = yaml.safe_load((project / "dvc.lock").read_text())["stages"]
    tokens_md5 = next(o["md5"] for o in lock["tokenize"]["outs"] if o["path"] == "data/tokens")
    commit = sh(project, "git", "rev-parse", "HEAD").stdout.strip()
    names = {m.name for m in client.search_registered_models("name LIKE 'seqlab-%'")} - {"seqlab-seq2seq_additive", "seqlab-seq2seq_none",
                                                                                                  "seqlab-seq2seq_transformer"}
    assert names == {"seqlab-ngram", "seqlab-lstm_attention", "seqlab-lstm", "seqlab-transformer", "seqlab-hybrid"}
    fingerprint = json.loads((project / "models" / "hybrid" / "scores.json").read_text())["test"]["fingerprint"]
    for name in names:
        for version in client.search_model_versions(f"name = '{name}'"):
            tags = version.tags
            assert tags["git_commit"] == commit and tags["data_hash"] == tokens_md5 and tags["test_fingerprint"] == fingerprint
            assert len(tags["vocab_sha256"]) == 64 and float(tags["test_ppl"]) > 1


def test_the_champion_is_the_best_model_and_predicts_from_the_registry(project):
    client = registry(project)
    board = pd.read_csv(project / "metrics" / "leaderboard.csv")
    name, version = champion_of(client)
    champion = client.get_model_version(name, version)
    assert name == board.registered_model.iloc[0] and champion.tags["model"] == board.model.iloc[0]
    decision = json.loads((project / "metrics" / "register.json").read_text())
    assert decision["outcome"] in {"promoted", "kept"} and decision["candidate"]["version"] == str(version)
    context = ["predict", "--context", "the cat sat on the", "--top-k", "3"]
    by_uri = sh(project, str(BIN / "seqlab"), *context, "--model", f"models:/{name}@champion")
    by_path = sh(project, str(BIN / "seqlab"), *context, "--model", board.path.iloc[0])
    assert by_uri.stdout == by_path.stdout and len(by_uri.stdout.splitlines()) == 3
    hybrid = sh(project, str(BIN / "seqlab"), "predict", "--model", "models:/seqlab-hybrid/1", "--context", "on the", "--top-k", "0")
    assert sum(float(line.split()[0]) for line in hybrid.stdout.splitlines()) == pytest.approx(1.0, abs=1e-5)


def test_an_identical_rerun_leaves_the_champion_untouched(project, tmp_path):
    project = copy_project(project, tmp_path / "project")
    client = registry(project)
    name, version = champion_of(client)
    folder = pd.read_csv(project / "metrics" / "leaderboard.csv").path.iloc[0]
    kind, _, rest = folder.removeprefix("models/").partition("/")
    stage = {"ngram": "ngram", "baselines": f"baseline@{rest}", "neural": "train", "hybrid": "hybrid"}[kind]
    if kind == "ngram":  # the grid keeps a model built from the same inputs: remove it to build it again
        shutil.rmtree(project / folder)
    count = len(client.search_model_versions(f"name = '{name}'"))
    dvc(project, "repro", "-f", "-s", stage)  # the champion's stage again: the same files, a new version
    assert len(client.search_model_versions(f"name = '{name}'")) == count + 1
    result = dvc(project, "repro", "-f", "-s", "register")
    assert f"register: champion unchanged: the champion {name} v{version} " in result.stdout
    assert "is the same model (same files)" in result.stdout
    assert champion_of(client) == (name, version)
    assert json.loads((project / "metrics" / "register.json").read_text())["outcome"] == "kept"


def retrain_step(root: Path, name: str, summary: Path) -> subprocess.CompletedProcess:
    """A `run:` step of .github/workflows/retrain.yml, run by bash in ``root`` as the runner runs it."""
    (step,) = [s for s in yaml.safe_load((REPO / ".github/workflows/retrain.yml").read_text())["jobs"]["retrain"]["steps"]
               if s.get("name", "").startswith(name)]
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", step["run"]], cwd=root, capture_output=True, text=True,
                          timeout=300, env={**env(), "BASELINE": "HEAD", "GITHUB_STEP_SUMMARY": str(summary)})


def test_the_retrain_workflow_steps_compare_metrics_report_the_gate_and_use_a_remote(project, tmp_path):
    project = copy_project(project, tmp_path / "project")
    summary = tmp_path / "summary.md"
    diff = retrain_step(project, "Metrics against", summary)
    assert diff.returncode == 0, diff.stderr
    written = summary.read_text()
    assert "## Metrics against HEAD" in written and "| metrics/metrics.json " in written and "## Params against HEAD" in written
    gate = retrain_step(project, "Champion gate", summary)
    assert gate.returncode == 0 and json.loads((project / "metrics" / "register.json").read_text())["outcome"] in gate.stdout
    assert retrain_step(project, "Metrics against", summary).returncode == 0
    broken = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", "{ dvc metrics diff no-such-ref; } | tee /dev/null"],
                            cwd=project, env=env(), capture_output=True, text=True)
    assert broken.returncode != 0  # as the workflow's shell runs it, a failing diff fails the step

    assert "no DVC remote configured" in retrain_step(project, "Pull", summary).stdout
    remote = tmp_path / "remote"
    dvc(project, "remote", "add", "-d", "ci", str(remote))
    try:
        assert "no DVC-tracked data" in retrain_step(project, "Pull", summary).stdout
        extra = project / "data" / "extra"  # a corpus version of one's own, tracked with `dvc add`
        extra.mkdir()
        (extra / "train.txt").write_text("a new version of the corpus\n")
        dvc(project, "add", "data/extra")
        sh(project, "git", "add", "data/extra.dvc", "data/.gitignore")
        pushed = retrain_step(project, "Push", summary)
        assert pushed.returncode == 0, pushed.stderr
        assert (remote / "files" / "md5").is_dir()

        # a fresh runner: neither the data nor DVC's cache of it
        shutil.rmtree(extra)
        cached = lambda md5: project / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]  # noqa: E731
        listing = cached(yaml.safe_load((project / "data" / "extra.dvc").read_text())["outs"][0]["md5"])
        for entry in json.loads(listing.read_text()):
            cached(entry["md5"]).unlink()
        listing.unlink()
        pulled = retrain_step(project, "Pull", summary)
        assert pulled.returncode == 0, pulled.stderr
        assert (extra / "train.txt").read_text() == "a new version of the corpus\n" and " fetched" in pulled.stdout
    finally:
        dvc(project, "remote", "remove", "ci")


def test_the_mlflow_ui_shows_every_model_and_the_champion_in_a_browser(project, tmp_path):
    import socket

    import psutil

    from seqlab import ui

    if not (os.environ.get("SEQLAB_CHROMIUM") or shutil.which("chromium")):
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed; .ci/run installs it with apt-get")
        pytest.skip("chromium is not installed (apt-get install chromium); CI runs this test")
    client = registry(project)
    experiment = client.get_experiment_by_name("seqlab").experiment_id
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ui.serve(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}", port, tmp_path / "server.log")
    try:
        processes = [psutil.Process(server.pid), *psutil.Process(server.pid).children(recursive=True)]
        listening = {c.laddr for p in processes for c in p.net_connections("tcp") if c.status == psutil.CONN_LISTEN}
        assert listening and {address.ip for address in listening} == {"127.0.0.1"}  # never all interfaces
        seen = ui.look(f"http://127.0.0.1:{port}", experiment, "hybrid", tmp_path / "runs.png")
    finally:
        ui.stop(server)
    lines = set(seen.runs.splitlines())
    assert {"hybrid", "train lstm-dot", "train lstm", "train transformer", "ngram mkn-3"} <= lines  # every family's run ...
    assert set(ui.COLUMNS) <= lines  # ... under the same metric and param names
    name, version = champion_of(client)
    assert "champion" in seen.models and name in seen.models.splitlines()
    assert (tmp_path / "runs.png").read_bytes()[:4] == b"\x89PNG"


# --- bad input: one line naming the file and key, non-zero exit, no partial output ------------------


def run_stage(root: Path, stage: str) -> subprocess.CompletedProcess:
    result = sh(root, sys.executable, f"pipelines/{stage}.py", check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == errors[0]
    assert not list((root / "data").glob(".*.tmp")), "a temporary output was left behind"
    return result


def last_line(result) -> str:
    return result.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize(
    "breakage, expected",
    [
        (lambda f: (f / "train.tsv").write_text("cat\tC A T\nhippopotamus\tH I P P O P O T A M U S\n"),
         "error: data/pairs/train.tsv:2: the source has 12 tokens, more than params.yaml: pairs.max_length (10)"),
        (lambda f: (f / "test.tsv").write_text("dot\tD O T\ncat\tC A T\n"),
         "error: data/pairs/test.tsv:2: source 'c a t' of the test split is also in train (data/pairs/train.tsv:1)"),
        (lambda f: ((f / "valid.tsv").unlink(), (f / "valid.src").write_text("cog\nrat\n"), (f / "valid.tgt").write_text("C O G\n")),
         "error: data/pairs/valid.src: 2 lines but data/pairs/valid.tgt has 1"),
        (lambda f: (f / "valid.tsv").write_text("cog C O G\n"), "error: data/pairs/valid.tsv: line 1: expected 'source<TAB>target' (no tab)"),
    ],
    ids=["too-long", "test-in-train", "line-counts", "no-tab"],
)
def test_bad_pairs_stop_the_pairs_stage_in_one_line(tmp_path, breakage, expected):
    root = make_project(tmp_path, pairs__max_length=10)
    breakage(root / "data" / "pairs")
    result = run_stage(root, "pairs")
    assert last_line(result).startswith(expected), last_line(result)
    assert not (root / "data" / "seq2seq").exists() and not (root / "metrics" / "pairs.json").exists()


@pytest.mark.parametrize(
    "setup, expected",
    [
        ({"data__path": "data/missing"}, "error: data/missing: corpus directory not found (corpus set by params.yaml: data.path)"),
        ({"data__source": "file", "data__path": "data/corpus/empty.txt"}, "error: data/corpus/empty.txt: no sequences"),
        ("latin1", "error: data/corpus/train.txt: not UTF-8 text (invalid byte at offset 2)"),
        ("binary", "error: data/corpus/valid.txt: binary file (NUL byte at offset 2)"),
        ("empty-split", "error: data/corpus/test.txt: split 'test' has no sequences"),
    ],
)
def test_bad_corpus(tmp_path, setup, expected):
    root = make_project(tmp_path, **(setup if isinstance(setup, dict) else {}))
    corpus = root / "data" / "corpus"
    (corpus / "empty.txt").write_text("")
    if setup == "latin1":
        (corpus / "train.txt").write_bytes("naïve café\n".encode("latin-1"))
    elif setup == "binary":
        (corpus / "valid.txt").write_bytes(b"\x89P\x00\x01\x02")
    elif setup == "empty-split":
        (corpus / "test.txt").write_text("\n \n")
    result = run_stage(root, "prepare")
    assert last_line(result).startswith(expected)
    assert not (root / "data" / "prepared").exists()


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"tokenize__kind": "sentencepiece"}, "error: params.yaml: tokenize.kind: Input should be 'word', 'char' or 'bpe' (got 'sentencepiece')"),
        ({"vocab__min_frq": 2}, "error: params.yaml: vocab.min_frq: unknown key"),
        ({"vocab__min_freq": "2"}, "error: params.yaml: vocab.min_freq: Input should be a valid integer (got '2')"),
        ({"tune__optimization_config": {"lr": {"min": 0.01, "max": 0.001}}},
         "error: params.yaml: tune.optimization_config: lr: min 0.01 is above its max 0.001"),
        ({"ngram__estimators": ["mkn", "witten-bell"]},
         "error: params.yaml: ngram.estimators: unknown estimator 'witten-bell'; expected one of mle, laplace, addk, jm, backoff, kn, mkn"),
        ({"train__lr": -0.001}, "error: params.yaml: train.lr: Input should be greater than 0 (got -0.001)"),
    ],
)
def test_bad_params(tmp_path, change, expected):
    root = make_project(tmp_path, **change)
    result = dvc(root, "repro", check=False)
    assert result.returncode != 0
    assert [line for line in result.stderr.splitlines() if line.startswith("error:")] == [expected]
    assert not (root / "data" / "prepared").exists()


def test_a_malformed_search_space_file_stops_the_tune_stage_with_nothing_written(tmp_path):
    root = make_project(tmp_path, tune__space_file="configs/space.json")
    (root / "configs" / "space.json").write_text('{"name": "s", "tokens": 200, "optimization_config": {"lr": {"min": 0.001,')
    result = dvc(root, "repro", "tune", check=False)
    assert result.returncode != 0
    (line,) = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: configs/space.json: not valid JSON"), result.stderr
    assert (root / "data" / "tokens").exists()  # the stages before it ran
    assert not any((root / out).exists() for out in ("models/tune", "metrics/tune.json", "metrics/tune_trials.csv", "plots/tune.png"))


def test_failing_expectation_stops_repro_and_names_it(tmp_path):
    root = make_project(tmp_path, validate__max_tokens=6)
    result = dvc(root, "repro", check=False)
    assert result.returncode != 0
    between = "expect_column_values_to_be_between(column='n_tokens', min_value=1, max_value=6)"
    assert (
        f"error: validation failed, 3 of 14 expectations: train.stats: {between} failed for 12 of 12 rows"
        f" (e.g. 7, 7, 7); valid.stats: {between} failed for 1 of 2 rows (e.g. 7); test.stats: {between}"
        " failed for 1 of 2 rows (e.g. 7) (see data/validation/docs/index.html)\n"
    ) in result.stderr
    assert (root / "data" / "validation" / "docs" / "index.html").exists()  # the report, to see why
    frame = runs(root)
    assert frame.set_index("tags.mlflow.runName").loc["validate", "status"] == "FAILED"
    assert frame[frame["tags.mlflow.parentRunId"].isna()].iloc[0]["status"] == "FAILED"


def test_missing_corpus_path_stops_repro_before_the_stage_runs(tmp_path):
    root = make_project(tmp_path, data__path="data/nope")
    result = dvc(root, "repro", check=False)
    assert result.returncode != 0
    assert f"ERROR: failed to reproduce 'prepare': [Errno 2] No such file or directory: '{root / 'data' / 'nope'}'" in result.stderr
    assert not (root / "data" / "prepared").exists()


def serve(project: Path, uri: str, log: Path):
    """``mlflow models serve`` of a registered model on 127.0.0.1, in the project's own environment."""
    import time

    import requests

    port = free_port()
    with open(log, "w") as out:
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port)],
            cwd=project, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            env={**env(), "MLFLOW_TRACKING_URI": f"sqlite:///{project / 'mlruns' / 'mlflow.db'}"})
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mlflow models serve {uri} stopped:\n{log.read_text()[-2000:]}"
        try:
            if requests.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                return server, f"http://127.0.0.1:{port}"
        except requests.ConnectionError:
            pass
        time.sleep(1)
    os.killpg(server.pid, 9)
    raise AssertionError(f"mlflow models serve {uri} did not answer in 180 s:\n{log.read_text()[-2000:]}")


def test_every_family_answers_the_same_request_under_mlflow_models_serve(project, tmp_path):
    import signal

    import requests

    from seqlab.vocab import load_vocab

    vocab = load_vocab(project / "data" / "vocab")
    contexts = ["<s> the cat", "<s> a dog sat on the"]
    request = {"dataframe_split": {"columns": ["context"], "data": [[c] for c in contexts]}, "params": {"top_k": 0}}
    answers = {}
    for uri in ("models:/seqlab-lstm_attention/1", "models:/seqlab-ngram/1"):
        server, base = serve(project, uri, tmp_path / "serve.log")
        try:
            response = requests.post(f"{base}/invocations", json=request, timeout=120)
            assert response.status_code == 200, response.text[:500]
            answers[uri] = rows = pd.DataFrame(response.json()["predictions"])
            assert list(rows.columns) == ["context_index", "token", "probability"]
            for i in range(len(contexts)):
                mine = rows[rows.context_index == i]
                assert mine.probability.sum() == pytest.approx(1.0, abs=1e-6)  # the whole vocabulary, top_k=0
                assert set(mine.token) <= set(vocab.tokens) and mine.token.is_unique
            one = requests.post(f"{base}/invocations", json={**request, "params": {"top_k": 3}}, timeout=120).json()["predictions"]
            assert len(one) == 3 * len(contexts)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)
    neural, ngram = answers.values()
    assert not neural.equals(ngram)  # two models, one interface


def test_the_ngram_model_is_served_without_torch(project):
    code = (
        "import sys, mlflow, pandas as pd\n"
        f"mlflow.set_tracking_uri('sqlite:///{project / 'mlruns' / 'mlflow.db'}')\n"
        "model = mlflow.pyfunc.load_model('models:/seqlab-ngram/1')\n"
        "rows = model.predict(pd.DataFrame({'context': ['<s> the cat']}), params={'top_k': 0})\n"
        "assert abs(rows.probability.sum() - 1) < 1e-9, rows.probability.sum()\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.'))[:3])\n"
    )
    result = sh(project, sys.executable, "-c", code)
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_two_experiments_at_once_on_the_local_store_lose_nothing_and_gate_as_in_turn(project, tmp_path):
    """`dvc exp run --queue` twice and `dvc queue start -j 2` against the default SQLite store, compared
    with `-j 1`."""
    from helpers import in_turn_and_at_once

    @contextlib.contextmanager
    def local(jobs):
        root = copy_project(project, tmp_path / f"jobs-{jobs}")
        yield root, f"sqlite:///{root / 'mlruns' / 'mlflow.db'}", None

    in_turn_and_at_once(local)
