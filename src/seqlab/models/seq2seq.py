"""The encoder-decoder with attention, and the fixed-context encoder-decoder it is measured against.

    source ids -> embedding -> (bi)LSTM/GRU encoder -> states h_1..h_S, summary (last states of both directions)
    target <s> y_1 .. y_{t-1} -> embedding -> LSTM/GRU decoder (started from tanh(W summary)) -> s_t
    context c_t = attention(s_t over h_1..h_S)            (none: c_t = the summary, at every step)
    o_t = tanh(W_o [s_t; c_t]) -> dropout -> log-softmax over the target vocabulary

Scores (``seqlab.models.attention``): Bahdanau's ``additive``, Luong's ``dot`` and ``general``, and
``multihead``. With ``none`` the decoder sees the source only as the fixed summary (fed with every
input token and in its first state), as in the encoder-decoder before attention (Cho et al., 2014):
the baseline that shows what attention is for. The bidirectional encoder's directions each have
half of ``hidden_dim``, so its states are as wide as the decoder's and every score applies.

The decoder does not feed the attention output back into its input, so under teacher forcing the
whole target runs through the recurrent layer in one call; decoding runs the same computation one
step at a time (``step``), and the two give the same scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from seqlab.models.attention import Attention

PAD, UNK, BOS, EOS = 0, 1, 2, 3  # the pair vocabularies' specials, in this order
Memory = dict[str, Tensor]  # the encoded source: batch first throughout
DecoderState = dict[str, Tensor]


@dataclass(frozen=True)
class Seq2SeqConfig:
    """Everything that fixes the architecture; saved in every checkpoint."""

    source_vocab: int
    target_vocab: int
    rnn: str  # lstm | gru
    attention: str  # none | dot | general | additive | multihead
    heads: int
    embed_dim: int
    hidden_dim: int
    encoder_layers: int
    decoder_layers: int
    bidirectional: bool
    dropout: float
    kind: str = "rnn"  # rnn (this module's EncoderDecoder) | transformer (seq2seq_transformer); rnn, attention and
    #                   bidirectional are the recurrent model's; hidden_dim, heads, the layers and dropout serve both

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict) -> "Seq2SeqConfig":
        return cls(**raw)


class EncoderDecoder(nn.Module):
    def __init__(self, config: Seq2SeqConfig):
        super().__init__()
        c = self.config = config
        rnn = {"lstm": nn.LSTM, "gru": nn.GRU}[c.rnn]
        if c.bidirectional and c.hidden_dim % 2:
            raise ValueError(f"a bidirectional encoder needs an even hidden_dim (got {c.hidden_dim})")
        per_direction = c.hidden_dim // 2 if c.bidirectional else c.hidden_dim
        self.source_embed = nn.Embedding(c.source_vocab, c.embed_dim, padding_idx=PAD)
        self.target_embed = nn.Embedding(c.target_vocab, c.embed_dim, padding_idx=PAD)
        self.encoder = rnn(c.embed_dim, per_direction, c.encoder_layers, batch_first=True, bidirectional=c.bidirectional,
                           dropout=c.dropout if c.encoder_layers > 1 else 0.0)
        fixed = c.attention == "none"
        self.decoder = rnn(c.embed_dim + (c.hidden_dim if fixed else 0), c.hidden_dim, c.decoder_layers, batch_first=True,
                           dropout=c.dropout if c.decoder_layers > 1 else 0.0)
        self.bridge = nn.Linear(c.hidden_dim, c.decoder_layers * c.hidden_dim)
        self.attention = None if fixed else Attention(c.attention, c.hidden_dim, c.heads)
        self.combine = nn.Linear(2 * c.hidden_dim, c.hidden_dim)
        self.drop = nn.Dropout(c.dropout)
        self.out = nn.Linear(c.hidden_dim, c.target_vocab)

    # --- the source ---------------------------------------------------------------------------------

    def encode(self, source: Tensor, lengths: Tensor) -> Memory:
        """source (B, S) padded with PAD, lengths (B,) -> the memory every decoder step reads."""
        c = self.config
        embedded = self.drop(self.source_embed(source))
        packed = pack_padded_sequence(embedded, lengths.cpu(), batch_first=True, enforce_sorted=False)
        outputs, final = self.encoder(packed)
        states, _ = pad_packed_sequence(outputs, batch_first=True, total_length=source.shape[1])
        h = final[0] if c.rnn == "lstm" else final  # (layers * directions, B, per_direction)
        summary = torch.cat([h[-2], h[-1]], dim=-1) if c.bidirectional else h[-1]  # the top layer's last states
        memory = {"states": states, "mask": source != PAD, "summary": summary}
        if self.attention is not None:
            memory["keys"], memory["values"] = self.attention.project(states)
        return memory

    def start(self, memory: Memory) -> DecoderState:
        """The decoder's first state, from the source summary (batch first)."""
        c = self.config
        B = memory["summary"].shape[0]
        h = torch.tanh(self.bridge(memory["summary"])).view(B, c.decoder_layers, c.hidden_dim)
        state = {"h": h}
        if c.rnn == "lstm":
            state["c"] = torch.zeros_like(h)
        return state

    # --- the target ---------------------------------------------------------------------------------

    def _run(self, inputs: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, DecoderState, Tensor | None]:
        """inputs (B, T) target ids -> log-probs (B, T, V), the next state, attention weights (B, T, S)."""
        embedded = self.drop(self.target_embed(inputs))
        if self.attention is None:
            embedded = torch.cat([embedded, memory["summary"].unsqueeze(1).expand(-1, inputs.shape[1], -1)], dim=-1)
        hidden = tuple(state[k].transpose(0, 1).contiguous() for k in ("h", "c") if k in state)
        outputs, final = self.decoder(embedded, hidden if self.config.rnn == "lstm" else hidden[0])
        final = final if self.config.rnn == "lstm" else (final,)
        new = {k: v.transpose(0, 1) for k, v in zip(("h", "c"), final)}
        if self.attention is None:
            context, weights = memory["summary"].unsqueeze(1).expand_as(outputs), None
        else:
            mask = memory["mask"][:, None, None, :] if self.attention.score == "multihead" else memory["mask"][:, None, :]
            context, weights = self.attention(outputs, memory["keys"], memory["values"], mask)
        features = self.drop(torch.tanh(self.combine(torch.cat([outputs, context.to(outputs.dtype)], dim=-1))))
        return F.log_softmax(self.out(features).float(), dim=-1), new, weights

    def forward(self, source: Tensor, lengths: Tensor, inputs: Tensor) -> tuple[Tensor, Tensor | None]:
        """Teacher forcing: the target's inputs (``<s> y_1 .. y_n``, padded) -> log-probs (B, T, V) of
        the next tokens, and the attention weights (B, T, S)."""
        memory = self.encode(source, lengths)
        log_probs, _, weights = self._run(inputs, self.start(memory), memory)
        return log_probs, weights

    def step(self, previous: Tensor, state: DecoderState, memory: Memory) -> tuple[Tensor, DecoderState, Tensor | None]:
        """One decoding step: the previous tokens (B,) -> log-probs (B, V), the next state, weights (B, S)."""
        log_probs, state, weights = self._run(previous.unsqueeze(1), state, memory)
        return log_probs[:, 0], state, None if weights is None else weights[:, 0]


def length_penalty(length: Tensor, alpha: float) -> Tensor:
    """GNMT's ((5 + length) / 6) ** alpha; alpha 0 ranks by the summed log-probability."""
    return ((5.0 + length.float()) / 6.0) ** alpha


def select(tree: dict[str, Tensor], index: Tensor) -> dict[str, Tensor]:
    """Every tensor of a batch-first dict, rows ``index`` (beam reordering)."""
    return {k: v.index_select(0, index) for k, v in tree.items()}

