"""A neural language model in the shape of every other model: ``log_probs`` for the one scoring path,
``next_log_probs`` for prediction and serving.

The split's segments (``<s> w1 ... wn </s>`` laid end to end) are read as one continuous stream:
each token is predicted from everything before it, across sequence edges, like in training. For
speed the stream is cut into ``batch_size`` contiguous pieces read in parallel, each with its own
carried state; the scored tokens are the same whatever the batch size.

A context is read the same way, window by window with the state carried: the memory a prediction
needs is bounded by the window and the model's ``memory``, not by the length of the context.
"""

from __future__ import annotations

import functools

import math
from typing import Sequence

import numpy as np
import torch
from torch import nn

from seqlab.determinism import fix_threads
from seqlab.errors import SeqLabError
from seqlab.scoring import Segments


@functools.cache
def native_bf16() -> bool:
    """Whether this CPU computes in bf16 natively (AVX512-BF16 or AMX); elsewhere bf16 is emulated, and
    slower than float32."""
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def uses_bf16(device: torch.device, amp: bool | str) -> bool:
    """``amp`` true: bf16 on CUDA; ``"cpu"``: on CUDA and on a CPU with native bf16 too; false: never."""
    if device.type == "cpu":
        return amp == "cpu" and native_bf16()
    return bool(amp) and device.type == "cuda"


def autocast(device: torch.device, amp: bool | str):
    """bf16 autocast where ``uses_bf16``; a no-op elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(device, amp))


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
    """A loaded network with the settings it is scored with. Scoring fixes torch's thread count first,
    so a model gives the same bits in a stage, ``seqlab score`` and a served version."""

    def __init__(self, model: nn.Module, batch_size: int = 16, window: int = 128, amp: bool = False):
        fix_threads()
        self.model, self.batch_size, self.window, self.amp = model, batch_size, window, amp

    @property
    def network(self) -> nn.Module:
        return self.model

    def log_probs(self, segments: Segments) -> np.ndarray:
        return stream_log_probs(self.model, segments.ids, self.batch_size, self.window, self.amp)

    @torch.no_grad()
    def next_log_probs(self, ids: Sequence[int]) -> np.ndarray:
        """Read ``ids`` from a fresh state, ``window`` tokens at a time with the state carried, and
        return the log-probabilities of the token after the last one (as ``log_probs`` scores it)."""
        if not len(ids):
            raise SeqLabError("a neural model needs a context of at least one token (a sequence starts with <s>)")
        model = self.model
        model.eval()
        device = next(model.parameters()).device
        inputs = torch.as_tensor(list(ids), dtype=torch.long, device=device)[None]
        state = model.init_state(1, device)
        for start in range(0, inputs.shape[1], self.window):
            features, state, _ = model(inputs[:, start : start + self.window], state)
        return model.output.log_probs(features[0, -1]).double().cpu().numpy()
