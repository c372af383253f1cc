"""The feed-forward neural n-gram (Bengio et al., 2003): a fixed reach, no recurrence.

    the last memory + 1 tokens -> their embeddings, concatenated -> N x [Linear -> ReLU -> dropout]
                               -> output layer (through a Linear to embed_dim where tied to the embedding)

Each position reads itself and the ``memory`` tokens before it and nothing older, so the model is an
n-gram of order ``memory + 2`` whose table is shared through the embeddings and the hidden layers.
Where the data's own order is short (state sequences of a process, event logs), this is the prior
that fits: a recurrent model also learns patterns of the training sequences older than the data's
order, which do not hold on new sequences (docs/benchmarks.md, the Markov chains). The output layer
reads the last hidden layer itself: a projection down to the embedding's width before it cost a
third of a point of cross-entropy on an order-2 chain.

The state carried from one window to the next is the embeddings of the last ``memory`` tokens
(zeros before the first), so window edges are invisible and generation costs the same per token
however long the prompt.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from seqlab.models.config import ModelConfig
from seqlab.models.lstm_attention import State
from seqlab.models.output import Output


class FeedForwardLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.drop_embed = nn.Dropout(c.dropout_embed)
        layers, width = [], (c.memory + 1) * c.embed_dim
        for _ in range(c.layers):
            layers += [nn.Linear(width, c.hidden_dim), nn.ReLU(), nn.Dropout(c.dropout_rnn)]
            width = c.hidden_dim
        if c.tie_weights:  # the decoder is the embedding matrix: its input is the embedding's width
            layers.append(nn.Linear(width, c.embed_dim))
            width = c.embed_dim
        self.hidden = nn.Sequential(*layers)
        self.drop_out = nn.Dropout(c.dropout_out)
        self.output = Output(width, c.vocab_size, c.output, c.cutoffs, c.div_value, self.embed if c.tie_weights else None)

    def init_state(self, batch_size: int, device=None) -> State:
        """The embeddings of the ``memory`` tokens before the first: zeros."""
        return {"context": torch.zeros(batch_size, self.config.memory, self.config.embed_dim, device=device)}

    def forward(self, ids: Tensor, state: State, need_weights: bool = False) -> tuple[Tensor, State, None]:
        """ids (B, T) -> features (B, T, hidden_dim; embed_dim where tied), the next state; no attention weights."""
        B, T = ids.shape
        reach = self.config.memory + 1
        embedded = torch.cat([state["context"], self.embed(ids)], dim=1)  # (B, memory + T, E)
        windows = embedded.unfold(1, reach, 1).transpose(2, 3).reshape(B, T, -1)  # oldest first: (B, T, reach * E)
        features = self.hidden(self.drop_embed(windows))
        return self.drop_out(features), {"context": embedded[:, T:]}, None
