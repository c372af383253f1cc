"""What every stage script shares: params loaded once, and the stage's MLflow run."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Iterator, Sequence

from seqlab.config import Params, load_params
from seqlab.io import remove
from seqlab.tracking import StageRun, stage_run

PARAMS_FILE = Path("params.yaml")


def params() -> Params:
    return load_params(PARAMS_FILE)


def neural_folders(params: Params) -> dict[str, str]:
    """Where the neural models are: ``tuned`` (the train stage) and each baseline, by name."""
    return {"tuned": "models/neural", **{name: f"models/baselines/{name}" for name in params.baselines}}


@contextlib.contextmanager
def tracked(stage: str, params: Params, *sections: str, outs: Sequence[str] = ()) -> Iterator[StageRun]:
    """The stage's child run, logging the params ``sections`` it reads.

    If the block fails, those of the stage's ``outs`` that it wrote are removed: a failed stage (bad
    input, a tracking server gone, an error after the first file) leaves none of its new outputs, not
    some. Outputs are written by renaming into place, so a written one is a new file (inode) or folder.
    """
    everything = params.model_dump(by_alias=True, mode="json")
    mine = {section: everything[section] for section in sections}
    before = {out: _identity(out) for out in outs}
    try:
        with stage_run(stage, params.tracking.experiment, mine, everything) as run:
            yield run
    except BaseException:
        for out in outs:
            if _identity(out) != before[out]:
                with contextlib.suppress(OSError):  # the stage's own error is the one to show
                    remove(out)
        raise


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns
