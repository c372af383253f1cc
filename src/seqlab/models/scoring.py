"""Scoring a token stream with a neural model, for the project's one scoring path.

The split's segments (``<s> w1 ... wn </s>`` laid end to end) are read as one continuous stream:
each token is predicted from everything before it, across sequence edges, like in training. For
speed the stream is cut into ``batch_size`` contiguous pieces read in parallel, each with its own
carried state; the scored tokens are the same whatever the batch size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from seqlab.ngram.counts import Segments


def autocast(device: torch.device, amp: bool):
    """bf16 autocast on CUDA when asked; a no-op elsewhere."""
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp and device.type == "cuda")


@torch.no_grad()
def stream_log_probs(model: nn.Module, ids: np.ndarray, batch_size: int = 16, window: int = 128, amp: bool = False) -> np.ndarray:
    """log p(ids[i] | ids[:i]) for every i >= 1, natural log; position 0 (nothing before it) gets 0."""
    device = next(model.parameters()).device
    model.eval()
    n = len(ids) - 1
    out = np.zeros(len(ids), dtype=np.float64)
    if n <= 0:
        return out
    streams = min(batch_size, n)
    length = math.ceil(n / streams)
    padded = np.zeros(streams * length + 1, dtype=np.int64)
    padded[: len(ids)] = ids
    inputs = torch.from_numpy(padded[:-1].reshape(streams, length)).to(device)
    targets = torch.from_numpy(padded[1:].reshape(streams, length)).to(device)
    state = model.init_state(streams, device)
    pieces = []
    for start in range(0, length, window):
        x, y = inputs[:, start : start + window], targets[:, start : start + window]
        with autocast(device, amp):
            features, state, _ = model(x, state)
            pieces.append(model.output.target_log_probs(features, y).double().cpu())
    out[1:] = torch.cat(pieces, dim=1).reshape(-1).numpy()[:n]
    return out


class NeuralLM:
    """A loaded model in the shape ``evaluate.score`` expects."""

    def __init__(self, model: nn.Module, batch_size: int = 16, window: int = 128, amp: bool = False):
        self.model, self.batch_size, self.window, self.amp = model, batch_size, window, amp

    def log_probs(self, segments: Segments) -> np.ndarray:
        return stream_log_probs(self.model, segments.ids, self.batch_size, self.window, self.amp)


class NextToken(nn.Module):
    """What the registered MLflow model computes: token ids (B, T) -> log-probabilities (B, V) of
    the token after each row's last one, each row read from a fresh state."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        features, _, _ = self.model(ids, self.model.init_state(ids.shape[0], ids.device))
        return self.model.output.log_probs(features[:, -1])
