"""The sequence-to-sequence task: pairs cut into length-sorted batches, teacher forcing (or scheduled
sampling), cross-entropy with optional label smoothing.

A pass visits every batch once in an order drawn from torch's generator at the pass's start; the
order is the state the loop carries (and saves), so a resumed run visits the same batches. Batches
hold pairs of similar source length, so little of a batch is padding. The valid score is the mean
negative log-likelihood per target token (``</s>`` included), teacher-forced, without smoothing:
the evaluation's cross-entropy.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqlab.config import LoopParams
from seqlab.models.checkpoint import SEQ2SEQ_FORMAT, save_checkpoint
from seqlab.models.seq2seq import BOS, EOS, PAD
from seqlab.training.loop import State

Encoded = list[tuple[list[int], list[int]]]  # (source ids, target ids) without <s> and </s>


def pad(rows: list[list[int]], device=None) -> Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [PAD] * (width - len(r)) for r in rows], dtype=torch.long, device=device)


def make_batch(pairs: Encoded, device=None) -> dict[str, Tensor]:
    """Padded source, source lengths, target inputs (``<s> y``) and outputs (``y </s>``)."""
    return {"source": pad([s for s, _ in pairs], device),
            "lengths": torch.tensor([len(s) for s, _ in pairs], dtype=torch.long, device=device),
            "inputs": pad([[BOS] + t for _, t in pairs], device),
            "outputs": pad([t + [EOS] for _, t in pairs], device)}


def batches(pairs: Encoded, batch_size: int, device=None) -> list[dict[str, Tensor]]:
    """``pairs`` sorted by (source, target) length and cut into batches of ``batch_size``."""
    order = sorted(range(len(pairs)), key=lambda i: (len(pairs[i][0]), len(pairs[i][1]), i))
    return [make_batch([pairs[i] for i in order[at : at + batch_size]], device) for at in range(0, len(order), batch_size)]


def teacher_forced_loss(model: nn.Module, batch: dict[str, Tensor], smoothing: float = 0.0,
                        teacher_forcing: float = 1.0) -> tuple[Tensor, int]:
    """Mean loss per target token of a batch, and the number of target tokens. With
    ``teacher_forcing`` below 1, each decoder input is the reference token with that probability and
    the model's own best guess otherwise (scheduled sampling, decided per token from torch's generator)."""
    if teacher_forcing >= 1.0:
        log_probs, _ = model(batch["source"], batch["lengths"], batch["inputs"])
    else:
        memory = model.encode(batch["source"], batch["lengths"])
        state, previous, steps = model.start(memory), batch["inputs"][:, 0], []
        for t in range(batch["inputs"].shape[1]):
            step_log_probs, state, _ = model.step(previous, state, memory)
            steps.append(step_log_probs)
            if t + 1 < batch["inputs"].shape[1]:
                truth = batch["inputs"][:, t + 1]
                keep = torch.rand(truth.shape, device=truth.device) < teacher_forcing
                previous = torch.where(keep | (truth == PAD), truth, step_log_probs.argmax(-1))
        log_probs = torch.stack(steps, dim=1)
    outputs = batch["outputs"]
    count = int((outputs != PAD).sum())
    # log-probs are normalised, so cross_entropy's own log-softmax leaves them as they are
    loss = F.cross_entropy(log_probs.reshape(-1, log_probs.shape[-1]), outputs.reshape(-1), ignore_index=PAD,
                           label_smoothing=smoothing)
    return loss, count


@torch.no_grad()
def mean_nll(model: nn.Module, data: list[dict[str, Tensor]]) -> float:
    """Teacher-forced negative log-likelihood per target token over ``data``'s batches."""
    model.eval()
    total, count = 0.0, 0
    for batch in data:
        log_probs, _ = model(batch["source"], batch["lengths"], batch["inputs"])
        outputs = batch["outputs"]
        picked = log_probs.gather(-1, outputs.unsqueeze(-1)).squeeze(-1)
        total -= float(picked[outputs != PAD].double().sum())
        count += int((outputs != PAD).sum())
    return total / count


class Seq2SeqTask:
    """Source-to-target transduction (``seqlab.training.loop.Task``)."""

    def __init__(self, train: Encoded, valid: Encoded, vocab_sha256: str, smoothing: float, teacher_forcing: float):
        self.train, self.valid, self.vocab_sha256 = train, valid, vocab_sha256
        self.smoothing, self.teacher_forcing = smoothing, teacher_forcing

    def prepare(self, cfg: LoopParams, device: torch.device) -> int:
        self.batches = batches(self.train, cfg.batch_size, device)
        self.valid_batches = batches(self.valid, cfg.eval_batch_size, device)
        self.target_tokens = sum(len(t) + 1 for _, t in self.train)
        return len(self.batches)

    def tokens_per_step(self, cfg: LoopParams) -> int:
        return max(1, round(self.target_tokens / len(self.batches)))

    def start_pass(self, model: nn.Module, device: torch.device) -> State:
        return {"order": torch.randperm(len(self.batches)).to(device)}

    def loss(self, model: nn.Module, step: int, state: State) -> tuple[Tensor, State, int]:
        loss, count = teacher_forced_loss(model, self.batches[int(state["order"][step])], self.smoothing, self.teacher_forcing)
        return loss, state, count

    def detach(self, state: State) -> State:
        return state

    def valid_loss(self, model: nn.Module, cfg: LoopParams) -> float:
        return mean_nll(model, self.valid_batches)

    def save_best(self, path: Path, model: nn.Module, **extra) -> None:
        save_checkpoint(path, model, self.vocab_sha256, SEQ2SEQ_FORMAT, **extra)
