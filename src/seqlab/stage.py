"""What every stage script shares: params loaded once, and the stage's MLflow run."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator

from seqlab.config import Params, load_params
from seqlab.tracking import StageRun, stage_run

PARAMS_FILE = Path("params.yaml")


def params() -> Params:
    return load_params(PARAMS_FILE)


def neural_folders(params: Params) -> dict[str, str]:
    """Where the neural models are: ``tuned`` (the train stage) and each baseline, by name."""
    return {"tuned": "models/neural", **{name: f"models/baselines/{name}" for name in params.baselines}}


@contextlib.contextmanager
def tracked(stage: str, params: Params, *sections: str) -> Iterator[StageRun]:
    """The stage's child run, logging the params ``sections`` it reads."""
    everything = params.model_dump(by_alias=True, mode="json")
    mine = {section: everything[section] for section in sections}
    with stage_run(stage, params.tracking.experiment, mine, everything) as run:
        yield run
