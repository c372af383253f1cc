"""The architecture of a neural model: everything that fixes it, saved in every checkpoint.

Its values come from params.yaml's ``model`` section (``seqlab.models.config_from_params``); there are
no defaults here, so the pipeline, the search and the tests cannot disagree about them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class ModelConfig:
    """Everything that fixes the architecture; saved in every checkpoint."""

    vocab_size: int
    kind: str  # lstm_attention | transformer | feedforward
    rnn: str  # lstm | gru
    attention: str  # none | dot | general | additive | multihead
    heads: int  # multihead attention and the transformer
    memory: int  # each position attends to (feedforward: reads) itself and the `memory` states before it
    embed_dim: int
    hidden_dim: int
    layers: int
    dropout_embed: float
    dropout_rnn: float
    dropout_out: float
    weight_drop: float  # recurrent weight dropout: DropConnect on the hidden-to-hidden matrices
    tie_weights: bool  # full softmax only: decoder weight = embedding weight
    output: str  # full | adaptive
    cutoffs: tuple[int, ...]  # adaptive softmax cluster edges
    div_value: float
    ff_dim: int  # transformer feed-forward width

    def as_dict(self) -> dict:
        return {**asdict(self), "cutoffs": list(self.cutoffs)}

    @classmethod
    def from_dict(cls, raw: dict) -> "ModelConfig":
        # checkpoints written before weight_drop existed trained without it
        return cls(**{"weight_drop": 0.0, **raw, "cutoffs": tuple(raw["cutoffs"])})
