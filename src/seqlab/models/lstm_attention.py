"""The LSTM-with-attention language model, read top to bottom.

    tokens -> embedding -> N-layer LSTM (or GRU) -> causal attention over the recent LSTM outputs
           -> tanh(LayerNorm(W [context; output])) -> output layer (full or adaptive softmax)
           -> next-token log-probs

The layer norm keeps the tanh out of saturation: under Adam, without it, W [context; output] reaches
|x| ~ 8 within ten steps and training stalls at the unigram plateau (on the default corpus, valid
perplexity 534 after one epoch and 552 after two; 131 after one epoch with the layer norm).

The state carried from one window to the next (and from one generated token to the next) is the
recurrent state plus the attention cache: the keys and values of the last ``memory`` outputs.
``attention: none`` is the plain LSTM of the same size.

``weight_drop`` is DropConnect on the recurrent weights (Merity et al., 2018, AWD-LSTM): each
training window multiplies the hidden-to-hidden matrices by a fresh dropout mask, so the recurrence
cannot lean on any one path through the state. On a small corpus it is what keeps the model from
learning patterns of the training sequences that the data does not hold (docs/benchmarks.md, the
Markov chains).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from seqlab.models.attention import Attention, band_mask
from seqlab.models.config import ModelConfig
from seqlab.models.output import Output

State = dict[str, Tensor]


class LSTMAttentionLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.embed_dim)
        self.drop_embed = nn.Dropout(c.dropout_embed)
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[c.rnn]
        self.rnn = rnn(c.embed_dim, c.hidden_dim, c.layers, batch_first=True, dropout=c.dropout_rnn if c.layers > 1 else 0.0)
        if c.weight_drop:
            for layer in range(c.layers):
                parametrize.register_parametrization(self.rnn, f"weight_hh_l{layer}", nn.Dropout(c.weight_drop))
        self.drop_rnn = nn.Dropout(c.dropout_rnn)
        if c.attention == "none":
            self.attention = None
            self.combine = nn.Linear(c.hidden_dim, c.embed_dim) if c.hidden_dim != c.embed_dim else None
        else:
            self.attention = Attention(c.attention, c.hidden_dim, c.heads)
            self.combine = nn.Sequential(nn.Linear(2 * c.hidden_dim, c.embed_dim), nn.LayerNorm(c.embed_dim))
        self.drop_out = nn.Dropout(c.dropout_out)
        self.output = Output(c.embed_dim, c.vocab_size, c.output, c.cutoffs, c.div_value, self.embed if c.tie_weights else None)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.uniform_(self.embed.weight, -0.1, 0.1)

    def init_state(self, batch_size: int, device=None) -> State:
        c = self.config
        zeros = lambda *shape: torch.zeros(*shape, device=device)  # noqa: E731
        state = {"h": zeros(c.layers, batch_size, c.hidden_dim)}
        if c.rnn == "lstm":
            state["c"] = zeros(c.layers, batch_size, c.hidden_dim)
        if self.attention is not None:  # the attention cache starts empty
            state["keys"] = zeros(batch_size, 0, c.hidden_dim)
            state["values"] = zeros(batch_size, 0, c.hidden_dim)
        return state

    def forward(self, ids: Tensor, state: State, need_weights: bool = False) -> tuple[Tensor, State, Tensor | None]:
        """ids (B, T) -> features (B, T, embed_dim) for the output layer, the next state, and the
        attention weights (B, T, cache + T) when asked for."""
        c = self.config
        x = self.drop_embed(self.embed(ids))
        recurrent = (state["h"], state["c"]) if c.rnn == "lstm" else state["h"]
        with parametrize.cached():  # one weight-drop mask per window: nn.LSTM reads each weight 4 times a call
            out, recurrent = self.rnn(x, recurrent)  # (B, T, hidden)
        out = self.drop_rnn(out)
        new = {"h": recurrent[0], "c": recurrent[1]} if c.rnn == "lstm" else {"h": recurrent}
        weights = None
        if self.attention is None:
            features = self.combine(out) if self.combine is not None else out
        else:
            keys, values = self.attention.project(out)
            keys = torch.cat([state["keys"], keys], dim=1)  # (B, cache + T, hidden)
            values = torch.cat([state["values"], values], dim=1)
            allowed = band_mask(ids.shape[1], keys.shape[1], c.memory, ids.device)
            context, weights = self.attention(out, keys, values, allowed)
            features = torch.tanh(self.combine(torch.cat([context, out], dim=-1)))
            new["keys"], new["values"] = keys[:, -c.memory :], values[:, -c.memory :]
        return self.drop_out(features), new, weights if need_weights else None
