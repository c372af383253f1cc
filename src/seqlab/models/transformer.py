"""The baseline: a small causal Transformer LM, trained by the same trainer on the same windows.

    tokens -> embedding + sinusoidal positions -> N x [LayerNorm -> multi-head self-attention -> residual
           -> LayerNorm -> feed-forward -> residual] -> LayerNorm -> output layer

It sees what the LSTM's attention sees: each position attends to itself and the ``memory`` tokens
before it. The carried state is those tokens (not hidden states), and each window is computed over
``memory + window`` tokens; generation recomputes that bounded context for each new token.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from seqlab.models.attention import Attention, band_mask
from seqlab.models.config import ModelConfig
from seqlab.models.lstm_attention import State
from seqlab.models.output import Output


class Block(nn.Module):
    def __init__(self, c: ModelConfig):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(c.embed_dim), nn.LayerNorm(c.embed_dim)
        self.attention = Attention("multihead", c.embed_dim, c.heads)
        self.ff = nn.Sequential(nn.Linear(c.embed_dim, c.ff_dim), nn.GELU(), nn.Linear(c.ff_dim, c.embed_dim))
        self.drop = nn.Dropout(c.dropout_out)

    def forward(self, x: Tensor, allowed: Tensor) -> tuple[Tensor, Tensor]:
        h = self.norm1(x)
        keys, values = self.attention.project(h)
        context, weights = self.attention(h, keys, values, allowed)
        x = x + self.drop(context)
        return x + self.drop(self.ff(self.norm2(x))), weights


class TransformerLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.drop_embed = nn.Dropout(c.dropout_embed)
        self.blocks = nn.ModuleList(Block(c) for _ in range(c.layers))
        self.norm = nn.LayerNorm(c.embed_dim)
        self.drop_out = nn.Dropout(c.dropout_out)
        self.output = Output(c.embed_dim, c.vocab_size, c.output, c.cutoffs, c.div_value, self.embed if c.tie_weights else None)
        nn.init.normal_(self.embed.weight, std=0.02)

    def positions(self, length: int, device=None) -> Tensor:
        """Sinusoidal encodings (length, embed_dim) of positions 0..length-1 within the computed context."""
        dim = self.config.embed_dim
        position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
        rate = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
        table = torch.zeros(length, dim, device=device)
        table[:, 0::2] = torch.sin(position * rate)
        table[:, 1::2] = torch.cos(position * rate[: dim // 2])
        return table

    def init_state(self, batch_size: int, device=None) -> State:
        return {"tokens": torch.zeros(batch_size, 0, dtype=torch.long, device=device)}

    def forward(self, ids: Tensor, state: State, need_weights: bool = False) -> tuple[Tensor, State, Tensor | None]:
        """ids (B, T) -> features (B, T, embed_dim), the next state, last-layer weights (B, T, context) when asked."""
        c, T = self.config, ids.shape[1]
        tokens = torch.cat([state["tokens"], ids], dim=1)  # (B, memory + T)
        x = self.drop_embed(self.embed(tokens) * math.sqrt(c.embed_dim) + self.positions(tokens.shape[1], ids.device))
        allowed = band_mask(tokens.shape[1], tokens.shape[1], c.memory, ids.device)
        for block in self.blocks:
            x, weights = block(x, allowed)
        features = self.drop_out(self.norm(x[:, -T:]))
        return features, {"tokens": tokens[:, -c.memory :]}, weights[:, -T:] if need_weights else None
