"""The baseline: a small causal Transformer LM, trained by the same trainer on the same windows.

    tokens -> embedding -> N x [LayerNorm -> multi-head self-attention (ALiBi) -> residual
           -> LayerNorm -> feed-forward -> residual] -> LayerNorm -> output layer

It sees what the LSTM's attention sees: each position attends to itself and the ``memory`` positions
before it, in every layer. Like the LSTM's attention cache, the state carried from one window to the
next is each layer's keys and values of the last ``memory`` positions (detached in training), so a
window computes only its own tokens and generation costs the same per token however long the prompt.
Positions are relative: each head adds a learnt score for the distance (0 to ``memory``) to its
attention scores, started as ALiBi's ``-slope * distance`` (Press et al., 2022); the distances a band
holds are all there is to learn, so it reads a stream of any length. ALiBi's fixed slopes alone
cannot tell the last state from the one before it sharply enough for state sequences. On CUDA attention is PyTorch's
fused ``scaled_dot_product_attention``; on CPU the scores are written out, which is faster there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqlab.models.attention import band_mask
from seqlab.models.config import ModelConfig
from seqlab.models.lstm_attention import State
from seqlab.models.output import Output


def alibi_slopes(heads: int) -> Tensor:
    """The geometric slopes 2^(-8/heads), 2^(-16/heads), ... of ALiBi, one per head."""
    return torch.tensor([2.0 ** (-8.0 * (i + 1) / heads) for i in range(heads)])


def alibi_bias(heads: int, memory: int) -> Tensor:
    """(heads, memory + 1): each head's score for each distance 0..memory, ALiBi's -slope * distance."""
    return -alibi_slopes(heads).view(-1, 1) * torch.arange(memory + 1).float()


def attend(q: Tensor, k: Tensor, v: Tensor, bias: Tensor, fused: bool) -> tuple[Tensor, Tensor | None]:
    """q (B, heads, T, d), k and v (B, heads, S, d), additive bias (heads, T, S) -> the context
    (B, heads, T, d) and the weights (B, heads, T, S), None when ``fused``.

    ``fused``: PyTorch's ``scaled_dot_product_attention``, which never writes the scores out (what
    CUDA takes; the mask of the full (B, heads, T, S) shape is a view). Otherwise the scores are
    written out and the weights applied by two batched products, with the softmax in float32 even
    under bf16 autocast: on CPU that is faster at a window's sizes, because the fused kernel's
    backward computes the scores again (``python bench/lstm_bench.py attention``).
    """
    if fused:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype).expand(q.shape[0], -1, -1, -1)), None
    weights = torch.softmax(((q * q.shape[-1] ** -0.5) @ k.transpose(-1, -2)).float() + bias.float(), dim=-1)
    return weights.to(v.dtype) @ v, weights


class Block(nn.Module):
    """A parallel block (GPT-J, PaLM): attention and feed-forward read the same normalised input and
    their sum joins the residual, ``x + dropout(attention(norm(x)) + ff(norm(x)))``. The queries, keys,
    values and the feed-forward's input are one matrix product: one LayerNorm, one dropout and three
    products per layer instead of two, two and six."""

    def __init__(self, c: ModelConfig):
        super().__init__()
        self.heads, self.memory, self.ff_dim = c.heads, c.memory, c.ff_dim
        self.norm = nn.LayerNorm(c.embed_dim)
        self.into = nn.Linear(c.embed_dim, 3 * c.embed_dim + c.ff_dim)  # queries, keys, values, ff hidden
        self.attention_out = nn.Linear(c.embed_dim, c.embed_dim, bias=False)  # the heads' outputs -> residual ...
        self.ff_out = nn.Linear(c.ff_dim, c.embed_dim)  # ... plus the feed-forward's (one bias for both)
        self.drop = nn.Dropout(c.dropout_out)

    def forward(self, x: Tensor, keys: Tensor, values: Tensor, bias: Tensor, need_weights: bool = False
                ) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
        """x (B, T, D), cached keys/values (B, heads, S, D/heads), bias (heads, T, S + T) -> the block's
        output (B, T, D), the keys and values of the last ``memory`` positions, and the last weights
        (B, T, S + T, mean over heads) when asked."""
        B, T, D = x.shape
        qkv, hidden = self.into(self.norm(x)).split([3 * D, self.ff_dim], dim=-1)
        q, k, v = qkv.view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # 3 x (B, heads, T, d)
        k, v = torch.cat([keys, k.to(keys.dtype)], dim=2), torch.cat([values, v.to(values.dtype)], dim=2)
        context, attention = attend(q, k.to(q.dtype), v.to(q.dtype), bias, fused=q.is_cuda and not need_weights)
        weights = attention.mean(dim=1) if need_weights else None
        out = self.attention_out(context.transpose(1, 2).reshape(B, T, D)) + self.ff_out(F.gelu(hidden))
        return x + self.drop(out), k[:, :, -self.memory :], v[:, :, -self.memory :], weights


class TransformerLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.drop_embed = nn.Dropout(c.dropout_embed)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.embed_dim)  # no dropout after it: each block's two already apply dropout_out
        self.output = Output(c.embed_dim, c.vocab_size, c.output, c.cutoffs, c.div_value, self.embed if c.tie_weights else None)
        nn.init.normal_(self.embed.weight, std=0.02)
        self.position_bias = nn.Parameter(alibi_bias(c.heads, c.memory))  # learnt from ALiBi's

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # a checkpoint from before the scores were learnt was trained with ALiBi's: it reads as it did
        state_dict.setdefault(prefix + "position_bias", alibi_bias(self.config.heads, self.config.memory))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def bias(self, queries: int, keys: int, device) -> Tensor:
        """(heads, queries, keys) additive scores of the last ``queries`` of ``keys`` positions:
        the head's learnt score for the distance inside the band of ``memory``, -inf outside."""
        allowed = band_mask(queries, keys, self.config.memory, device)
        q = torch.arange(keys - queries, keys, device=device).unsqueeze(1)
        distance = (q - torch.arange(keys, device=device).unsqueeze(0)).clamp(0, self.config.memory)
        return self.position_bias[:, distance].masked_fill(~allowed, float("-inf"))

    def init_state(self, batch_size: int, device=None) -> State:
        """Every layer's key/value cache, empty: ``keys0``, ``values0``, ``keys1``, ..."""
        c = self.config
        empty = lambda: torch.zeros(batch_size, c.heads, 0, c.embed_dim // c.heads, device=device)  # noqa: E731
        return {f"{name}{i}": empty() for i in range(c.layers) for name in ("keys", "values")}

    def forward(self, ids: Tensor, state: State, need_weights: bool = False) -> tuple[Tensor, State, Tensor | None]:
        """ids (B, T) -> features (B, T, embed_dim), the next state, last-layer weights (B, T, cache + T) when asked."""
        c = self.config
        x = self.drop_embed(self.embed(ids) * math.sqrt(c.embed_dim))
        bias = self.bias(ids.shape[1], state["keys0"].shape[2] + ids.shape[1], ids.device)  # every layer's cache is as long
        new, weights = {}, None
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            x, new[f"keys{i}"], new[f"values{i}"], weights = block(x, state[f"keys{i}"], state[f"values{i}"], bias, need_weights and last)
        return self.norm(x), new, weights
