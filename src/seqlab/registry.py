"""The MLflow model registry: one registered model per family, versions that say what they were built
from, and the champion gate.

Families: ``seqlab-ngram``, ``seqlab-lstm_attention``, ``seqlab-lstm`` (no attention),
``seqlab-transformer`` and ``seqlab-hybrid``. Every version carries tags for the git commit, the DVC
hash of the token data, the vocabulary hash, the test-set fingerprint, its perplexities and the DVC
hash of its model directory (which is how the ``register`` stage finds the version of a model file).

The encoder-decoders of the sequence-to-sequence task are ``seqlab-seq2seq_<attention>``
(``seqlab-seq2seq_additive``, ``seqlab-seq2seq_none``, ...) and ``seqlab-seq2seq_transformer``.

Every version is tagged with its task (``task``: ``lm`` for a language model, ``seq2seq``), and each
task has its own ``champion``: one version across the families of that task, the best model so far.
The gate compares a candidate only with the champion of its own task, and moves the alias only to a
model with a strictly lower test score on the same test data and vocabulary (perplexity for ``lm``,
word error rate for ``seq2seq``); a model that does not beat it gets ``challenger`` in its own
family, and the reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Mapping

from seqlab.errors import SeqLabError
from seqlab.io import dvc_md5

PREFIX = "seqlab-"
CHAMPION, CHALLENGER = "champion", "challenger"
GATE_TAG = "seqlab.gate"
TASK_TAG = "task"
LANGUAGE_MODEL = "lm"  # the task of versions registered before versions carried one
SEQ2SEQ = "seq2seq"
GATE_METRIC = {LANGUAGE_MODEL: ("test_ppl", "test ppl"), SEQ2SEQ: ("test_wer", "test WER")}  # tag, words


def registered_name(family: str) -> str:
    return f"{PREFIX}{family}"


def neural_family(kind: str, rnn: str, attention: str) -> str:
    """The recurrent model's ``lstm`` / ``gru`` (no attention) or ``lstm_attention`` / ``gru_attention``;
    every other kind (``transformer``, ``feedforward``) is its own family."""
    if kind != "lstm_attention":
        return kind
    return rnn if attention == "none" else f"{rnn}_attention"


def task_of(tags: Mapping[str, str]) -> str:
    return tags.get(TASK_TAG, LANGUAGE_MODEL)


def version_tags(summary: Mapping, model_dir: str | Path, tokens_dir: str | Path, task: str = LANGUAGE_MODEL) -> dict[str, str]:
    """What a registered version was built from and how it scored (``summary`` is its scores.json)."""
    from seqlab.tracking import git_commit

    return {
        "model": summary["model"],
        TASK_TAG: task,
        "git_commit": git_commit() or "unknown",
        "data_hash": dvc_md5(tokens_dir),
        "vocab_sha256": summary["vocab_sha256"],
        "test_fingerprint": summary["test"]["fingerprint"],
        "test_tokens": str(summary["test"]["tokens"]),
        "valid_ppl": repr(summary["valid"]["ppl"]),
        "test_ppl": repr(summary["test"]["ppl"]),
        "model_hash": dvc_md5(model_dir),
    }


def seq2seq_version_tags(summary: Mapping, model_dir: str | Path, data_dir: str | Path) -> dict[str, str]:
    """What an encoder-decoder's version was built from and how it scored (``summary`` is its scores.json)."""
    from seqlab.tracking import git_commit

    test = summary["test"]
    return {
        "model": summary["model"],
        TASK_TAG: SEQ2SEQ,
        "git_commit": git_commit() or "unknown",
        "data_hash": dvc_md5(data_dir),
        "vocab_sha256": summary["vocab_sha256"],
        "test_fingerprint": f"{test['sources']}:{test['target_tokens']}:{dvc_md5(Path(data_dir) / 'test.tsv')}",
        "test_sources": str(test["sources"]),
        "valid_wer": repr(summary["valid"]["wer"]),
        "test_wer": repr(test["wer"]),
        "test_per": repr(test["per"]),
        "model_hash": dvc_md5(model_dir),
    }


@dataclass(frozen=True)
class Version:
    name: str
    version: str
    tags: Mapping[str, str]

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version} ({self.tags.get('model', '?')})"

    @property
    def metric(self) -> tuple[str, str]:
        """The tag the gate compares for this version's task, and its name in words."""
        return GATE_METRIC.get(task_of(self.tags), GATE_METRIC[LANGUAGE_MODEL])

    @property
    def score(self) -> float:
        """The test score the gate compares (lower is better; inf when missing)."""
        try:
            return float(self.tags[self.metric[0]])
        except (KeyError, ValueError):
            return math.inf


@dataclass(frozen=True)
class Decision:
    outcome: Literal["promoted", "challenger", "kept"]
    reason: str
    candidate: Version
    champion: Version | None  # before the gate

    def as_dict(self) -> dict:
        side = lambda v: v and {"registered_model": v.name, "version": v.version, "model": v.tags.get("model"), v.metric[0]: v.score}  # noqa: E731
        return {"outcome": self.outcome, "reason": self.reason, "candidate": side(self.candidate), "champion_before": side(self.champion)}


def decide(candidate: Version, champion: Version | None, on_new_test_set: str = "challenger") -> Decision:
    """The gate, on data alone: promote, make a challenger, or keep things as they are."""
    if champion is not None and task_of(champion.tags) != task_of(candidate.tags):
        raise SeqLabError(f"registry: {candidate.label} ({task_of(candidate.tags)}) cannot be compared with "
                          f"{champion.label} ({task_of(champion.tags)}): each task has a champion of its own")
    if champion is None:
        return Decision("promoted", "there was no champion", candidate, None)
    if (candidate.name, candidate.version) == (champion.name, champion.version):
        return Decision("kept", f"{candidate.label} is already the champion", candidate, champion)
    if candidate.tags.get("model_hash") == champion.tags.get("model_hash"):
        return Decision("kept", f"the champion {champion.label} is the same model (same files)", candidate, champion)
    comparable = all(candidate.tags.get(k) == champion.tags.get(k) for k in ("test_fingerprint", "vocab_sha256"))
    if not comparable:
        why = f"the champion {champion.label} was scored on other test tokens or another vocabulary"
        if on_new_test_set == "promote":
            return Decision("promoted", f"{why} (register.on_new_test_set: promote)", candidate, champion)
        return Decision("challenger", f"{why}, so they cannot be compared; set register.on_new_test_set: promote to replace it",
                        candidate, champion)
    words = candidate.metric[1]
    if candidate.score < champion.score:
        return Decision("promoted", f"{words} {candidate.score:.4f} beats the champion {champion.label} at {champion.score:.4f}",
                        candidate, champion)
    return Decision("challenger", f"{words} {candidate.score:.4f} does not beat the champion {champion.label} at "
                    f"{champion.score:.4f}", candidate, champion)


def find_version(client, name: str, model_dir: str | Path) -> Version:
    """The newest version of ``name`` registered from the files now in ``model_dir``."""
    digest = dvc_md5(model_dir)
    found = [v for v in client.search_model_versions(f"name = '{name}'") if v.tags.get("model_hash") == digest]
    if not found:
        raise SeqLabError(f"{model_dir}: no version of {name} in the registry was built from these files "
                          "(built with another tracking store?); rebuild it with `dvc repro -f` on its stage")
    newest = max(found, key=lambda v: int(v.version))
    return Version(name, str(newest.version), dict(newest.tags))


def current_champion(client, task: str = LANGUAGE_MODEL) -> Version | None:
    """The version holding ``champion`` among the ``seqlab-*`` registered models of ``task``, if any."""
    holders = []
    for model in client.search_registered_models(f"name LIKE '{PREFIX}%'"):
        if CHAMPION in model.aliases:
            version = client.get_model_version_by_alias(model.name, CHAMPION)
            if task_of(version.tags) == task:
                holders.append(version)
    if len(holders) > 1:
        names = ", ".join(f"{v.name} v{v.version}" for v in holders)
        raise SeqLabError(f"registry: more than one model holds the alias {CHAMPION} ({names}); remove all but one in the MLflow UI")
    return Version(holders[0].name, str(holders[0].version), dict(holders[0].tags)) if holders else None


def apply(client, decision: Decision) -> None:
    """Move the aliases as ``decision`` says and tag the candidate with the outcome and reason."""
    candidate, champion = decision.candidate, decision.champion
    if decision.outcome == "promoted":  # set the new alias first: a failure in between leaves two, never none
        client.set_registered_model_alias(candidate.name, CHAMPION, candidate.version)
        if champion is not None and champion.name != candidate.name:
            client.delete_registered_model_alias(champion.name, CHAMPION)
        aliases = client.get_registered_model(candidate.name).aliases
        if str(aliases.get(CHALLENGER)) == candidate.version:
            client.delete_registered_model_alias(candidate.name, CHALLENGER)
    elif decision.outcome == "challenger":
        client.set_registered_model_alias(candidate.name, CHALLENGER, candidate.version)
    client.set_model_version_tag(candidate.name, candidate.version, GATE_TAG, f"{decision.outcome}: {decision.reason}")


def gate(client, candidate: Version, on_new_test_set: str = "challenger") -> Decision:
    """Decide on ``candidate`` against its task's champion now, and move the aliases. Pipelines on this
    machine gating at once (experiments run by ``dvc queue start -j 2``) take turns, so each compares
    with the champion the one before it left, as if they had run one after the other."""
    from seqlab.tracking import exclusive

    with exclusive("gate", client.tracking_uri):
        decision = decide(candidate, current_champion(client, task_of(candidate.tags)), on_new_test_set)
        apply(client, decision)
    return decision


def describe(decision: Decision) -> str:
    c = decision.candidate
    if decision.outcome == "promoted":
        return f"register: {c.label} is the new {CHAMPION}: {decision.reason}"
    if decision.outcome == "challenger":
        return f"register: {c.label} is the {CHALLENGER}: {decision.reason}"
    return f"register: {CHAMPION} unchanged: {decision.reason}"

