"""The final training on Ray Train (train.workers > 1): two CPU workers train the model one process
trains, a worker that dies is restarted and resumes, a failure is one line."""

import math

import pytest

from helpers import PASS, SCORED, TRAIN_IDS, VALID_IDS, VOCAB, comparable, model_config, project_params, run, train_params
from seqlab.config import TuneParams
from seqlab.errors import SeqLabError
from seqlab.models.checkpoint import load_checkpoint
from seqlab.models.neural_lm import stream_log_probs
from seqlab.ray_train import FAULT_ENV, fit_on_workers
from seqlab.training.lm import LanguageModelTask

# no dropout: each worker draws its own masks, so only then is the model the single process's to the rounding
CONFIG = model_config(VOCAB, embed_dim=16, hidden_dim=24, layers=1, heads=2, memory=6, cutoffs=(6, 15),
                      dropout_embed=0.0, dropout_rnn=0.0, dropout_out=0.0)
TWO = train_params(batch_size=4, bptt=10, tokens=3 * PASS, eval_every=PASS, lr=1e-2, patience=3, eval_batch_size=3,
                   checkpoint_every=7, workers=2)


def tune(**changes) -> TuneParams:
    return TuneParams.model_validate({**project_params()["tune"], "address": None, **changes})


def on_workers(workdir, cfg=TWO, train_ids=TRAIN_IDS, **changes):
    seen = []
    task = LanguageModelTask(train_ids, VALID_IDS, SCORED, "vocab-hash")
    result = fit_on_workers(CONFIG, task, cfg, tune(**changes), workdir, "run-1", seen.append, progress=False)
    return result, seen


def close(history, other) -> bool:
    return all(a.keys() == b.keys() and all(math.isclose(a[k], b[k], rel_tol=1e-6, abs_tol=1e-12) for k in a)
               for a, b in zip(comparable(history), comparable(other), strict=True))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory):
    """The same training in this process, on the whole batch."""
    return run(tmp_path_factory.mktemp("one"), config=CONFIG, cfg=TWO.model_copy(update={"workers": 1}))[1]


def test_two_workers_train_the_model_one_process_trains(tmp_path, one_process, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    result, seen = on_workers(tmp_path / "work")
    # each worker takes half the rows, DDP averages the gradients: the same steps, the same losses to the rounding
    assert close(result.history, one_process.history) and result.best_round == one_process.best_round == 3
    assert [r.round for r in seen] == [1, 2, 3] and seen == result.history  # each round passed on once, as it ended
    assert result.resumed_from is None
    best = load_checkpoint(tmp_path / "work" / "best.pt", "vocab-hash")  # the best weights are back where the stage reads them
    log_probs = stream_log_probs(best, VALID_IDS, batch_size=3, window=64)
    assert math.isclose(-log_probs[SCORED].mean(), result.best_valid_loss, rel_tol=1e-9)


def test_a_worker_that_dies_is_restarted_and_the_run_resumes_where_it_was(tmp_path, one_process, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setenv(FAULT_ENV, str(tmp_path / "crashed"))  # worker 1 exits after round 1, once
    result, seen = on_workers(tmp_path / "work", max_failures=1)
    assert (tmp_path / "crashed").exists()
    assert result.resumed_from == f"step {one_process.history[0].steps}"  # from the checkpoint of round 1's end
    assert close(result.history, one_process.history)  # every worker's state and random state came back
    assert [r.round for r in seen] == [1, 2, 3]  # the replayed round is not logged twice


def test_a_failure_on_the_workers_is_one_line_naming_its_cause(tmp_path, monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(SeqLabError) as caught:
        on_workers(tmp_path / "work", train_ids=TRAIN_IDS[:7], max_failures=0)  # fewer than 2 tokens a row of the batch
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("train.workers: training on 2 Ray Train workers failed after 0 restarts (tune.max_failures): "
                              "params.yaml: train.batch_size: 4 rows need at least 8 train tokens; the train split has 7")
    assert not (tmp_path / "work" / "best.pt").exists()


def test_an_unreachable_cluster_is_one_line_within_seconds(tmp_path, monkeypatch):
    import socket
    import time

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    started = time.monotonic()
    with pytest.raises(SeqLabError, match=rf"^params.yaml: tune.address: cannot reach the Ray cluster at 127.0.0.1:{port} "):
        on_workers(tmp_path / "work", address=f"127.0.0.1:{port}")
    assert time.monotonic() - started < 30 and not (tmp_path / "work" / "best.pt").exists()


@pytest.mark.parametrize("workers, batch_size", [(3, 32), (5, 4)])
def test_workers_that_do_not_divide_the_batch_are_refused(workers, batch_size):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=f"workers: {workers} must divide batch_size: {batch_size}"):
        train_params(workers=workers, batch_size=batch_size)
