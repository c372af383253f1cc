"""The language-model task: one continuous token stream, truncated BPTT, state carried across windows.

The train split is one stream of token ids cut into ``batch_size`` contiguous rows; each step reads
the next ``bptt`` columns, and the model's state (recurrent state and attention cache) is carried to
the next window, detached. A pass ends at the stream's end; the next starts again from its start with
a fresh state. The valid split is scored by the same function the evaluation uses. Data-parallel
workers each take an equal share of the rows (worker r the r-th), so together they see what one
process would.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqlab.config import TrainParams
from seqlab.errors import SeqLabError
from seqlab.models.checkpoint import save_checkpoint
from seqlab.models.neural_lm import stream_log_probs
from seqlab.training.loop import State, group


def batchify(ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """(batch_size, length) contiguous rows of the stream; the remainder is dropped."""
    length = len(ids) // batch_size
    if length < 2:
        raise SeqLabError(f"params.yaml: train.batch_size: {batch_size} rows need at least {2 * batch_size} train tokens; "
                          f"the train split has {len(ids)}")
    return torch.from_numpy(np.ascontiguousarray(ids[: batch_size * length]).reshape(batch_size, length).astype(np.int64))


def valid_loss(model: nn.Module, valid_ids: np.ndarray, scored: np.ndarray, cfg: TrainParams) -> float:
    """Mean negative log-likelihood over the scored positions: the evaluation's cross-entropy."""
    log_probs = stream_log_probs(model, valid_ids, cfg.eval_batch_size, cfg.eval_window, cfg.amp)
    return float(-log_probs[scored].mean())


class LanguageModelTask:
    """Next-token prediction on a token stream (``seqlab.training.loop.Task``)."""

    def __init__(self, train_ids: np.ndarray, valid_ids: np.ndarray, valid_scored: np.ndarray, vocab_sha256: str):
        self.train_ids, self.valid_ids, self.valid_scored, self.vocab_sha256 = train_ids, valid_ids, valid_scored, vocab_sha256

    def prepare(self, cfg: TrainParams, device: torch.device) -> int:
        rank, workers = group()  # a data-parallel worker takes its own rows of the batch
        self.batch_size, self.bptt = cfg.batch_size // workers, cfg.bptt
        self.data = batchify(self.train_ids, cfg.batch_size)[rank * self.batch_size : (rank + 1) * self.batch_size].to(device)
        return (self.data.shape[1] - 1 + cfg.bptt - 1) // cfg.bptt  # windows per pass

    def tokens_per_step(self, cfg: TrainParams) -> int:
        return cfg.batch_size * cfg.bptt

    def start_pass(self, model: nn.Module, device: torch.device) -> State:
        return model.init_state(self.batch_size, device)

    def loss(self, model: nn.Module, step: int, state: State) -> tuple[torch.Tensor, State, int]:
        x = self.data[:, step * self.bptt : (step + 1) * self.bptt]
        y = self.data[:, step * self.bptt + 1 : (step + 1) * self.bptt + 1]
        x = x[:, : y.shape[1]]
        features, state, _ = model(x, self.detach(state))
        return -model.output.target_log_probs(features, y).mean(), state, y.numel()

    def detach(self, state: State) -> State:
        return {k: v.detach() for k, v in state.items()}

    def valid_loss(self, model: nn.Module, cfg: TrainParams) -> float:
        return valid_loss(model, self.valid_ids, self.valid_scored, cfg)

    def save_best(self, path: Path, model: nn.Module, **extra) -> None:
        save_checkpoint(path, model, self.vocab_sha256, **extra)
