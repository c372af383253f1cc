"""Causal attention over recent hidden states: the score functions and the band mask.

Every position attends to itself and the ``memory`` states before it. Across a BPTT-window edge the
states of the previous window are carried (detached) as the start of the key/value cache, so context
is not cut at the edge; in generation the same cache grows one state per token and keeps only the
last ``memory``, so a token costs the same however long the prompt.

Scores, for a query state s and a key state h (both ``dim`` wide):

- ``dot``       sᵀh / √dim (scaled, so the softmax does not saturate at large widths)
- ``general``   sᵀWh (bilinear; Luong's "general")
- ``additive``  vᵀ tanh(W[s; h]) = vᵀ tanh(W_s s + W_h h) (Bahdanau)
- ``multihead`` scaled dot product of learned projections, ``heads`` heads, outputs projected back
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

SCORES = ("dot", "general", "additive", "multihead")


def band_mask(queries: int, keys: int, memory: int, device=None) -> Tensor:
    """(queries, keys) bool, True where attention is allowed.

    The queries are the last ``queries`` of the ``keys`` positions; query t may see key j when
    t - memory <= j <= t (both in key coordinates).
    """
    q = torch.arange(keys - queries, keys, device=device).unsqueeze(1)
    k = torch.arange(keys, device=device).unsqueeze(0)
    return (k <= q) & (k >= q - memory)


class Attention(nn.Module):
    """``project`` turns states into the cached (keys, values); ``forward`` attends with a mask."""

    def __init__(self, score: str, dim: int, heads: int = 1):
        super().__init__()
        if score not in SCORES:
            raise ValueError(f"unknown attention score {score!r}")
        if score == "multihead" and dim % heads:
            raise ValueError(f"multihead attention: width {dim} is not divisible by {heads} heads")
        self.score, self.dim, self.heads = score, dim, heads if score == "multihead" else 1
        if score == "general":
            self.key = nn.Linear(dim, dim, bias=False)  # W in sᵀWh, applied to h once and cached
        elif score == "additive":
            self.key = nn.Linear(dim, dim, bias=False)  # W_h
            self.query = nn.Linear(dim, dim)  # W_s (with the bias of W)
            self.v = nn.Linear(dim, 1, bias=False)
        elif score == "multihead":
            self.query = nn.Linear(dim, dim)
            self.key = nn.Linear(dim, dim)
            self.value = nn.Linear(dim, dim)
            self.proj = nn.Linear(dim, dim)

    def project(self, states: Tensor) -> tuple[Tensor, Tensor]:
        """(B, S, dim) states -> the (keys, values) that the cache holds."""
        if self.score == "dot":
            return states, states
        if self.score == "multihead":
            return self.key(states), self.value(states)
        return self.key(states), states

    def forward(self, queries: Tensor, keys: Tensor, values: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        """queries (B, T, dim), keys/values (B, S, dim), allowed (T, S) -> context (B, T, dim), weights (B, T, S).

        For ``multihead`` the weights returned are the mean over heads.
        """
        if self.score == "additive":
            # (B, T, 1, dim) + (B, 1, S, dim) -> (B, T, S)
            scores = self.v(torch.tanh(self.query(queries).unsqueeze(2) + keys.unsqueeze(1))).squeeze(-1)
            weights = _masked_softmax(scores, allowed)
            return weights @ values, weights
        if self.score == "multihead":
            B, T, _ = queries.shape
            split = lambda x: x.view(B, x.shape[1], self.heads, -1).transpose(1, 2)  # noqa: E731  (B, heads, L, dim/heads)
            q, k, v = split(self.query(queries)), split(keys), split(values)
            weights = _masked_softmax(q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1]), allowed)
            context = (weights @ v).transpose(1, 2).reshape(B, T, self.dim)
            return self.proj(context), weights.mean(dim=1)
        scale = 1 / math.sqrt(self.dim) if self.score == "dot" else 1.0
        weights = _masked_softmax(queries @ keys.transpose(-1, -2) * scale, allowed)
        return weights @ values, weights


def _masked_softmax(scores: Tensor, allowed: Tensor) -> Tensor:
    # softmax in float32 even under bf16 autocast: the weights of long spans need the precision
    return torch.softmax(scores.float().masked_fill(~allowed, float("-inf")), dim=-1).to(scores.dtype)
