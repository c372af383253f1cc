"""The champion gate: its decisions on data, and the aliases it moves in a real MLflow registry."""

import itertools
import subprocess
import sys
import time

import pytest

from helpers import in_turn
from seqlab import registry
from seqlab.errors import SeqLabError
from seqlab.io import dvc_md5
from seqlab.registry import Version, apply, current_champion, decide, describe, find_version, neural_family


def version(name="seqlab-ngram", number="1", ppl=100.0, fingerprint="test-a", vocab="vocab-a", model_hash=None, model="m"):
    return Version(name, number, {"test_ppl": repr(ppl), "test_fingerprint": fingerprint, "vocab_sha256": vocab,
                                  "model_hash": model_hash or f"{name}/{number}", "model": model})


def test_the_first_model_becomes_champion():
    decision = decide(version(), None)
    assert decision.outcome == "promoted" and decision.reason == "there was no champion"


def test_a_lower_test_perplexity_on_the_same_test_set_takes_the_title():
    decision = decide(version("seqlab-hybrid", ppl=90.0), version(ppl=100.0))
    assert decision.outcome == "promoted"
    assert decision.reason == "test ppl 90.0000 beats the champion seqlab-ngram v1 (m) at 100.0000"


@pytest.mark.parametrize("ppl", [100.0, 120.0])
def test_a_tie_or_worse_is_a_challenger_and_says_why(ppl):
    decision = decide(version(number="2", ppl=ppl), version(ppl=100.0))
    assert decision.outcome == "challenger"
    assert decision.reason == f"test ppl {ppl:.4f} does not beat the champion seqlab-ngram v1 (m) at 100.0000"
    assert describe(decision).startswith("register: seqlab-ngram v2 (m) is the challenger: test ppl")


def test_the_same_version_or_the_same_files_leave_the_champion_alone():
    champion = version(ppl=100.0)
    assert decide(champion, champion).outcome == "kept"
    again = decide(version(number="7", ppl=100.0, model_hash="seqlab-ngram/1"), champion)
    assert again.outcome == "kept" and "same model (same files)" in again.reason
    assert describe(again).startswith("register: champion unchanged")


@pytest.mark.parametrize("change", [{"fingerprint": "test-b"}, {"vocab": "vocab-b"}])
def test_another_test_set_or_vocabulary_cannot_be_compared(change):
    candidate = version("seqlab-hybrid", ppl=10.0, **change)
    kept = decide(candidate, version(ppl=100.0))
    assert kept.outcome == "challenger" and "other test tokens or another vocabulary" in kept.reason
    assert "register.on_new_test_set: promote" in kept.reason
    assert decide(candidate, version(ppl=100.0), on_new_test_set="promote").outcome == "promoted"


def test_a_version_without_a_test_perplexity_never_wins():
    assert Version("seqlab-ngram", "1", {}).score == float("inf")


def test_a_seq2seq_version_is_gated_by_test_wer_against_its_own_tasks_champion():
    tags = {"task": "seq2seq", "test_fingerprint": "f", "vocab_sha256": "v"}
    champion = Version("seqlab-seq2seq_additive", "1", {**tags, "test_wer": "0.31", "test_ppl": "1.2", "model_hash": "a"})
    better = Version("seqlab-seq2seq_dot", "1", {**tags, "test_wer": "0.29", "test_ppl": "9.9", "model_hash": "b"})
    worse = Version("seqlab-seq2seq_none", "1", {**tags, "test_wer": "0.55", "test_ppl": "1.0", "model_hash": "c"})
    promoted = decide(better, champion)
    assert promoted.outcome == "promoted" and promoted.reason.startswith("test WER 0.2900 beats")
    assert decide(worse, champion).outcome == "challenger"  # a lower perplexity does not count: WER decides
    assert promoted.as_dict()["candidate"]["test_wer"] == 0.29
    with pytest.raises(SeqLabError, match="each task has a champion of its own"):
        decide(better, version(ppl=1.0))


def test_neural_families():
    assert neural_family("lstm_attention", "lstm", "dot") == "lstm_attention"
    assert neural_family("lstm_attention", "gru", "none") == "gru"
    assert neural_family("transformer", "lstm", "dot") == "transformer"


@pytest.fixture
def client(tmp_path, monkeypatch):
    import mlflow

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    yield mlflow.MlflowClient()
    mlflow.set_tracking_uri(None)


def register(client, tmp_path, name, ppl, fingerprint="test-a", task=None):
    folder = tmp_path / f"{name}-{ppl}"
    folder.mkdir()
    (folder / "model.npz").write_text(f"{name} {ppl}")
    if not client.search_registered_models(f"name = '{name}'"):
        client.create_registered_model(name)
    created = client.create_model_version(name, source=folder.as_uri(), tags={
        "test_ppl": repr(ppl), "test_fingerprint": fingerprint, "vocab_sha256": "v", "model_hash": dvc_md5(folder), "model": name,
        **({"task": task} if task else {})})
    return folder, created.version


def gate(client, folder, name):
    return registry.gate(client, find_version(client, name, folder))


def test_the_alias_moves_across_families_and_challengers_are_marked(client, tmp_path):
    ngram, _ = register(client, tmp_path, "seqlab-ngram", 180.0)
    assert gate(client, ngram, "seqlab-ngram").outcome == "promoted"
    hybrid, hybrid_version = register(client, tmp_path, "seqlab-hybrid", 100.0)
    assert gate(client, hybrid, "seqlab-hybrid").outcome == "promoted"
    assert "champion" not in client.get_registered_model("seqlab-ngram").aliases  # one champion across families
    assert client.get_model_version_by_alias("seqlab-hybrid", "champion").version == hybrid_version

    worse, worse_version = register(client, tmp_path, "seqlab-hybrid", 101.0)
    decision = gate(client, worse, "seqlab-hybrid")
    assert decision.outcome == "challenger"
    aliases = client.get_registered_model("seqlab-hybrid").aliases
    assert aliases == {"champion": int(hybrid_version), "challenger": int(worse_version)}
    tag = client.get_model_version("seqlab-hybrid", worse_version).tags["seqlab.gate"]
    assert tag == "challenger: test ppl 101.0000 does not beat the champion seqlab-hybrid v1 (seqlab-hybrid) at 100.0000"

    assert gate(client, hybrid, "seqlab-hybrid").outcome == "kept"  # the same files again
    assert current_champion(client).version == str(hybrid_version)


def test_a_model_the_registry_never_saw_is_one_line(client, tmp_path):
    register(client, tmp_path, "seqlab-ngram", 180.0)
    unknown = tmp_path / "unknown"
    unknown.mkdir()
    (unknown / "model.npz").write_text("never registered")
    with pytest.raises(SeqLabError, match=r"unknown: no version of seqlab-ngram in the registry was built from these files"):
        find_version(client, "seqlab-ngram", unknown)


def test_two_champions_are_refused(client, tmp_path):
    _, a = register(client, tmp_path, "seqlab-ngram", 180.0)
    _, b = register(client, tmp_path, "seqlab-hybrid", 100.0)
    client.set_registered_model_alias("seqlab-ngram", "champion", a)
    client.set_registered_model_alias("seqlab-hybrid", "champion", b)
    with pytest.raises(SeqLabError, match="more than one model holds the alias champion"):
        current_champion(client)


def test_a_challenger_promoted_later_loses_the_challenger_alias(client, tmp_path):
    register(client, tmp_path, "seqlab-ngram", 100.0)
    champion = gate(client, tmp_path / "seqlab-ngram-100.0", "seqlab-ngram")
    assert champion.outcome == "promoted"
    other, other_version = register(client, tmp_path, "seqlab-hybrid", 90.0, fingerprint="test-b")
    assert gate(client, other, "seqlab-hybrid").outcome == "challenger"  # another test set: not comparable
    decision = decide(find_version(client, "seqlab-hybrid", other), current_champion(client), on_new_test_set="promote")
    apply(client, decision)
    assert client.get_registered_model("seqlab-hybrid").aliases == {"champion": int(other_version)}
    assert "champion" not in client.get_registered_model("seqlab-ngram").aliases


def test_each_task_has_a_champion_of_its_own(client, tmp_path):
    lm, lm_version = register(client, tmp_path, "seqlab-ngram", 180.0, task="lm")
    assert gate(client, lm, "seqlab-ngram").outcome == "promoted"
    # a sequence-to-sequence model with a far lower perplexity never competes with the language model
    other, other_version = register(client, tmp_path, "seqlab-seq2seq", 2.0, task="seq2seq")
    decision = gate(client, other, "seqlab-seq2seq")
    assert decision.outcome == "promoted" and decision.reason == "there was no champion"
    assert client.get_registered_model("seqlab-ngram").aliases == {"champion": int(lm_version)}
    assert client.get_registered_model("seqlab-seq2seq").aliases == {"champion": int(other_version)}
    assert current_champion(client, "lm").name == "seqlab-ngram" and current_champion(client, "seq2seq").name == "seqlab-seq2seq"
    assert current_champion(client).name == "seqlab-ngram"  # versions without a task tag are language models
    better, _ = register(client, tmp_path, "seqlab-hybrid", 100.0)  # no task tag: a language model
    assert gate(client, better, "seqlab-hybrid").outcome == "promoted"
    assert "champion" not in client.get_registered_model("seqlab-ngram").aliases
    assert client.get_registered_model("seqlab-seq2seq").aliases == {"champion": int(other_version)}
    with pytest.raises(SeqLabError, match=r"cannot be compared with .* each task has a champion of its own"):
        decide(find_version(client, "seqlab-seq2seq", other), current_champion(client, "lm"))


GATE = """
import sys, time
from pathlib import Path
from mlflow import MlflowClient
from seqlab.registry import find_version, gate
uri, name, folder, start = sys.argv[1:]
client = MlflowClient(tracking_uri=uri, registry_uri=uri)
candidate = find_version(client, name, Path(folder))
time.sleep(max(0.0, float(start) - time.time()))
print(gate(client, candidate).outcome)
"""


def test_pipelines_gating_at_once_take_turns(client, tmp_path):
    """Four experiments reach the gate at once (`dvc queue start -j 4`), each with a model of another
    family that beats the champion: one champion is left, the best, and each outcome is what one order
    in turn gives. Without turns, each sees the old champion, and two or more end up holding it."""
    weak, _ = register(client, tmp_path, "seqlab-ngram", 500.0)
    gate(client, weak, "seqlab-ngram")
    scores = {"seqlab-hybrid": 120.0, "seqlab-lstm": 90.0, "seqlab-transformer": 150.0, "seqlab-lstm_attention": 100.0}
    folders = {name: register(client, tmp_path, name, ppl)[0] for name, ppl in scores.items()}
    start = time.time() + 15  # every process has imported MLflow and found its version by then
    children = {name: subprocess.Popen([sys.executable, "-c", GATE, client.tracking_uri, name, str(folder), str(start)],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for name, folder in folders.items()}
    answers = {name: child.communicate(timeout=300) for name, child in children.items()}
    assert all(child.returncode == 0 for child in children.values()), answers
    outcomes = {name: out.strip() for name, (out, _) in answers.items()}
    assert current_champion(client).name == "seqlab-lstm"  # one holder, the best
    assert any(in_turn(scores, order, champion=500.0) == outcomes for order in itertools.permutations(scores)), outcomes
