"""One trial of a search: the task's trainer on a sampled configuration, on a Ray worker.

The task (``data["task"]``) is the language model (``model``/``train``, the train stage's trainer on
the token stream) or the encoder-decoder (``seq2seq``/``seq2seq_train``, the seq2seq stage's on the
pairs); both run the one trainer loop.

A trial trains on its budget (``tune.tokens``, with the schedule over that budget) and reports the
valid loss after every round (``tune.eval_every`` tokens) with a checkpoint, so a trial that crashes is
retried from its last round and ASHA can stop the weak ones early. ``check_space`` makes sure, before a
search starts, that every value a dimension can take is a valid setting.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from seqlab.config import TASKS, Params, put, validation_problem, with_changes
from seqlab.errors import SeqLabError
from seqlab.io import create_once
from seqlab.tune.space import Dimension, Space, overrides

FAULT_ENV = "SEQLAB_FAULT_TRIAL_CRASH"  # a marker path: the first trial to create it crashes once (fault tests)


def plain(value):
    """A Python scalar for a numpy one (Ray samples numpy integers), so configs validate and write as JSON."""
    return value.item() if isinstance(value, np.generic) else value


def trial_params(params: Params, config: Mapping[str, Any], dimensions: list[Dimension], task: str = "lm") -> Params:
    """``params`` with a trial's sampled ``config`` (seed names) put into ``task``'s sections."""
    return with_changes(params, overrides({k: plain(v) for k, v in config.items()}, dimensions), "trial", task)


def check_space(space: Space, params: Params, vocab_size: int, task: str = "lm") -> dict[str, bool]:
    """Every value a dimension can take must be a valid setting of its keys; returns which dimensions
    sample whole numbers. Raises SeqLabError naming the space's file and key."""
    from pydantic import ValidationError

    from seqlab.models import config_from_params

    names = (TASKS[task].arch, TASKS[task].train)
    sections = {name: getattr(params, name).model_dump() for name in names}
    integer = {}
    for dim in space.dimensions:
        bases = [sections[t.split(".")[0]][t.split(".")[1]] for t in dim.targets]
        integer[dim.key] = all(isinstance(b, int) and not isinstance(b, bool) for b in bases)
        if dim.values is None and integer[dim.key] and not all(float(v).is_integer() for v in (dim.low, dim.high)):
            raise SeqLabError(f"{space.source}.{dim.key}: {dim.targets[0]} is a whole number; min and max must be too")
        for value in dim.candidates():
            if integer[dim.key] and dim.values is None:
                value = int(value)
            trial = put(sections, {target: value for target in dim.targets}, space.source)
            try:
                for name in names:
                    Params.model_fields[name].annotation.model_validate(trial[name])
                if task == "lm":
                    config_from_params(trial["model"], vocab_size)
            except ValidationError as err:
                raise SeqLabError(f"{space.source}.{dim.key}: {value!r} is not a valid {dim.targets[0]}: "
                                  f"{validation_problem(err)}") from None
            except SeqLabError as err:
                raise SeqLabError(f"{space.source}.{dim.key}: {value!r} does not fit: {err}") from None
    return integer


def _model_and_task(params: Params, data: dict):
    """The freshly initialised model of a trial's params, its task (data and loss) and the settings
    that fix the run (for the resume fingerprint)."""
    if data["task"] == "seq2seq":
        from seqlab.models import Seq2SeqConfig, build_seq2seq
        from seqlab.training.seq2seq import Seq2SeqTask

        config = Seq2SeqConfig(data["source_vocab"], data["target_vocab"], **params.seq2seq.model_dump())
        model, train = build_seq2seq(config), params.seq2seq_train
        task = Seq2SeqTask(data["train_pairs"], data["valid_pairs"], data["vocab_sha256"], train.label_smoothing, train.teacher_forcing)
        return model, task, config.as_dict()
    from seqlab.models import build, config_from_params
    from seqlab.training.lm import LanguageModelTask

    config = config_from_params(params.model.model_dump(), data["vocab_size"])
    model = build(config)
    task = LanguageModelTask(data["train_ids"], data["valid_ids"], data["valid_scored"], data["vocab_sha256"])
    return model, task, config.as_dict()


def run_trial(config: dict, data: dict) -> None:
    """The trainable Ray runs: the task's trainer on the sampled configuration, reporting after every round."""
    import torch
    from ray import tune

    from seqlab.determinism import fix_threads
    from seqlab.training import fingerprint, fit

    fix_threads(max(1, int(data["resources"]["cpu"])))
    params = trial_params(data["params"], config, data["dimensions"], data["task"])
    train = getattr(params, TASKS[data["task"]].train)
    cfg = train.model_copy(update={"tokens": data["tokens"], "eval_every": data["eval_every"],
                                   "patience": data["rounds"],  # only ASHA stops a trial
                                   "device": "cuda" if data["resources"]["gpu"] else "cpu", "checkpoint_every": 1 << 30})
    with tempfile.TemporaryDirectory(prefix="seqlab-trial-") as tmp:
        work, done = Path(tmp), 0
        checkpoint = tune.get_checkpoint()
        if checkpoint:  # a retry after a crash, or a paused trial resumed: carry on from the last round
            with checkpoint.as_directory() as saved:
                shutil.copyfile(Path(saved) / "last.pt", work / "last.pt")
                done = json.loads((Path(saved) / "progress.json").read_text())["rounds"]

        def report(record) -> None:
            if record.round <= done:  # replayed history of a resumed run: reported before the crash
                return
            saved = work / f"checkpoint-{record.round}"
            saved.mkdir()
            shutil.copyfile(work / "last.pt", saved / "last.pt")
            (saved / "progress.json").write_text(json.dumps({"rounds": record.round}))
            tune.report({"round": record.round, "tokens": record.tokens, "valid_loss": record.valid_loss,
                         "valid_ppl": record.valid_ppl, "train_loss": record.train_loss, "tokens_per_s": record.tokens_per_s,
                         "lr": record.lr, "round_seconds": record.seconds}, checkpoint=tune.Checkpoint.from_directory(str(saved)))
            shutil.rmtree(saved, ignore_errors=True)
            marker = data.get("crash_marker")
            if marker and create_once(marker):
                raise RuntimeError(f"injected trial crash ({FAULT_ENV})")

        torch.manual_seed(cfg.seed)
        model, task, architecture = _model_and_task(params, data)
        fit(model, task, cfg, work, fingerprint(architecture, cfg.model_dump()), report, progress=False)
