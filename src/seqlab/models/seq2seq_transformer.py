"""The Transformer encoder-decoder (Vaswani et al., 2017): the attention-only baseline of the
sequence-to-sequence task, with the interface of ``EncoderDecoder`` (``encode``, ``start``, ``step``,
teacher-forced ``forward``), so the one trainer loop, decoder and scorer serve both.

    source ids -> embedding * sqrt(d) + sinusoidal positions -> pre-norm encoder layers -> states
    target <s> y_1 .. y_{t-1} -> the same -> pre-norm decoder layers (causal self-attention, then
    attention over the source states, then the feed-forward block) -> log-softmax

``hidden_dim`` is the model width d, ``heads`` the attention heads, the feed-forward width 4 d;
embeddings start at N(0, 1/d), so scaled by sqrt(d) they are as large as the positions (torch's
default N(0, 1) would drown the positions, and a word's letters would lose their order);
``encoder_layers`` and ``decoder_layers`` stack. A decoding step runs the decoder over the whole
prefix (targets are short: a word's phonemes), so it gives the teacher-forced scores exactly; the
state is the prefix. The alignment is the last decoder layer's source attention, averaged over heads.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from seqlab.models.seq2seq import PAD, DecoderState, Memory, Seq2SeqConfig


def positions(length: int, width: int, device=None) -> Tensor:
    """The sinusoidal position encodings (length, width)."""
    position = torch.arange(length, device=device, dtype=torch.float32).unsqueeze(1)
    rate = torch.exp(torch.arange(0, width, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / width))
    table = torch.zeros(length, width, device=device)
    table[:, 0::2] = torch.sin(position * rate)
    table[:, 1::2] = torch.cos(position * rate)[:, : width // 2]
    return table


class DecoderLayer(nn.Module):
    """Pre-norm: causal self-attention, attention over the source, feed-forward; each residual."""

    def __init__(self, width: int, heads: int, ff_dim: int, dropout: float):
        super().__init__()
        self.self_attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.source_attention = nn.MultiheadAttention(width, heads, dropout=dropout, batch_first=True)
        self.feed_forward = nn.Sequential(nn.Linear(width, ff_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(ff_dim, width))
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(3))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, states: Tensor, causal: Tensor, source_pad: Tensor, weights: bool) -> tuple[Tensor, Tensor | None]:
        y = self.norms[0](x)
        x = x + self.drop(self.self_attention(y, y, y, attn_mask=causal, need_weights=False)[0])
        y = self.norms[1](x)
        attended, attention = self.source_attention(y, states, states, key_padding_mask=source_pad, need_weights=weights)
        x = x + self.drop(attended)
        return x + self.drop(self.feed_forward(self.norms[2](x))), attention


class TransformerEncoderDecoder(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        c = self.config = config
        if c.hidden_dim % c.heads:
            raise ValueError(f"heads ({c.heads}) must divide the Transformer's width hidden_dim ({c.hidden_dim})")
        width, ff_dim = c.hidden_dim, 4 * c.hidden_dim
        self.scale = math.sqrt(width)
        self.source_embed = nn.Embedding(c.source_vocab, width, padding_idx=PAD)
        self.target_embed = nn.Embedding(c.target_vocab, width, padding_idx=PAD)
        for embedding in (self.source_embed, self.target_embed):
            nn.init.normal_(embedding.weight, std=width ** -0.5)
            nn.init.zeros_(embedding.weight[PAD])
        layer = nn.TransformerEncoderLayer(width, c.heads, ff_dim, c.dropout, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, c.encoder_layers, norm=nn.LayerNorm(width), enable_nested_tensor=False)
        self.decoder = nn.ModuleList(DecoderLayer(width, c.heads, ff_dim, c.dropout) for _ in range(c.decoder_layers))
        self.norm = nn.LayerNorm(width)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(width, c.target_vocab)

    def _embed(self, embedding: nn.Embedding, ids: Tensor) -> Tensor:
        return self.drop(embedding(ids) * self.scale + positions(ids.shape[1], self.config.hidden_dim, ids.device))

    def encode(self, source: Tensor, lengths: Tensor) -> Memory:
        """source (B, S) padded with PAD -> the memory every decoder step reads (lengths: from the padding)."""
        mask = source != PAD
        states = self.encoder(self._embed(self.source_embed, source), src_key_padding_mask=~mask)
        return {"states": states, "mask": mask}

    def start(self, memory: Memory) -> DecoderState:
        """The decoder's state is the target prefix; it starts empty."""
        return {"prefix": memory["mask"].new_zeros(memory["mask"].shape[0], 0, dtype=torch.long)}

    def _run(self, inputs: Tensor, memory: Memory, weights: bool) -> tuple[Tensor, Tensor | None]:
        T = inputs.shape[1]
        causal = torch.triu(torch.ones(T, T, dtype=torch.bool, device=inputs.device), diagonal=1)
        x, attention = self._embed(self.target_embed, inputs), None
        for i, layer in enumerate(self.decoder):
            x, attention = layer(x, memory["states"], causal, ~memory["mask"], weights and i == len(self.decoder) - 1)
        return F.log_softmax(self.out(self.norm(x)).float(), dim=-1), attention

    def forward(self, source: Tensor, lengths: Tensor, inputs: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: log-probs (B, T, V) of the next tokens; no weights (the training path)."""
        log_probs, _ = self._run(inputs, self.encode(source, lengths), weights=False)
        return log_probs, None

    def step(self, previous: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, DecoderState, Tensor]:
        """One decoding step: the previous tokens (B,) -> log-probs (B, V), the longer prefix, weights (B, S)."""
        prefix = torch.cat([state["prefix"], previous.unsqueeze(1)], dim=1)
        log_probs, attention = self._run(prefix, memory, weights=True)
        return log_probs[:, -1], {"prefix": prefix}, attention[:, -1]
