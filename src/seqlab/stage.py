"""What every stage script shares: params loaded once, the stage's MLflow run with its outputs removed
on failure, and the tail of every model stage (``publish``: log, register, tag)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator, Mapping, Sequence

from seqlab import paths
from seqlab.config import Params, load_params
from seqlab.io import remove
from seqlab.loading import DEFAULT_TOP_K
from seqlab.registry import LANGUAGE_MODEL, version_tags
from seqlab.scoring import EvalSet, Summary
from seqlab.tracking import StageRun, stage_run

PARAMS_FILE = Path(paths.PARAMS)


def params() -> Params:
    return load_params(PARAMS_FILE)


def neural_folders(params: Params) -> dict[str, str]:
    """Where the neural models are: ``tuned`` (the train stage) and each baseline, by name."""
    return paths.neural_folders(params.baselines)


def example_context(data: EvalSet, vocab, length: int = 6) -> str:
    """A served model's input example: the first tokens of a split, from a sequence start."""
    return " ".join(vocab.tokens[i] for i in data.segments.ids[:length])


def publish(run: StageRun, summary: Summary, folder: str, files: Mapping[str, str], example: str, *,
            params: Mapping[str, object] = {}, metrics: Mapping[str, float] = {}, artifacts: Sequence[str] = (),
            tags: Mapping[str, str] = {}, deps: Sequence[str] = (), outs: Sequence[str] = (),
            task: str = LANGUAGE_MODEL) -> str:
    """The tail every model stage shares, after ``folder`` (with its ``scores.json``) is written: log
    the summary's params and metrics with the stage's own (``params`` win), log ``artifacts``, register the model
    (``files``, with the vocabulary and tokenizer) as a new version of ``summary.registered_model``
    served by the one pyfunc, tag it with what it was built from, and tag the run with the DVC hashes
    of the data it read and wrote. Returns the version."""
    import pandas as pd

    run.log_params({"model": summary.model, "family": summary.family, **params})
    run.log_metrics({**metrics, **summary.metrics()})
    run.set_tag("seqlab.vocab_sha256", summary.vocab_sha256)
    for artifact in artifacts:
        run.log_artifact(artifact)
    version = run.log_pyfunc_model(
        {**files, "vocab": paths.VOCAB, "tokenizer": paths.TOKENIZER}, summary.registered_model,
        pd.DataFrame({"context": [example]}), {"top_k": DEFAULT_TOP_K},
        {**tags, **version_tags(summary.as_dict(), folder, paths.TOKENS, task)})
    run.tag_data_hashes("deps", [paths.TOKENS, paths.VOCAB, *deps])
    run.tag_data_hashes("outs", [folder, *outs])
    return version


@contextlib.contextmanager
def tracked(stage: str, params: Params, *sections: str, outs: Sequence[str] = ()) -> Iterator[StageRun]:
    """The stage's child run, logging the params ``sections`` it reads; ``outs`` as ``kept`` keeps them:
    a failed stage (bad input, a tracking server gone, an error after the first file) leaves the
    outputs as they were, none of its new ones."""
    everything = params.model_dump(by_alias=True, mode="json")
    mine = {section: everything[section] for section in sections}
    with kept(outs), stage_run(stage, params.tracking.experiment, mine, everything) as run:
        yield run


@contextlib.contextmanager
def kept(outs: Sequence[str]) -> Iterator[None]:
    """If the block fails, those of ``outs`` that it wrote are removed and the ones from before it are
    put back. Outputs are written by renaming into place, so a written one is a new file (inode) or
    folder, and the earlier one is kept meanwhile as hard links (no data copied) under ``.seqlab/kept/``.
    """
    before = {out: _identity(out) for out in outs}
    folder = None
    if any(before.values()):
        KEPT.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix="stage-", dir=KEPT)).resolve()
    earlier = {out: folder / str(number) / Path(out).name for number, out in enumerate(o for o in outs if before[o] is not None)}
    try:
        for out, copy in earlier.items():
            _link_copy(Path(out), copy)
        yield
    except BaseException:
        for out in outs:
            if _identity(out) != before[out]:
                with contextlib.suppress(OSError):  # the stage's own error is the one to show
                    remove(out)
                    if out in earlier:
                        os.replace(earlier[out], out)
        raise
    finally:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)


KEPT = Path(".seqlab") / "kept"  # in the stage's workspace: the last good outputs while it runs (git- and DVC-ignored)


def _link_copy(source: Path, target: Path) -> None:
    """``target`` holding what ``source`` holds, as hard links where the file system allows."""
    target.parent.mkdir(parents=True, exist_ok=True)

    def link(src, dst):
        try:
            os.link(src, dst)
        except OSError:
            shutil.copy2(src, dst)

    if source.is_dir() and not source.is_symlink():
        shutil.copytree(source, target, symlinks=True, copy_function=link)
    else:
        link(source, target)


def _identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_mtime_ns
