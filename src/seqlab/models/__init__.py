"""Neural language models: the LSTM with attention, its Transformer baseline and the feed-forward
neural n-gram, one interface.

A model maps token ids and a carried state to features; its ``output`` layer turns features into
log-probabilities. ``init_state``/``forward(ids, state)`` serve training windows, scoring and
token-by-token generation alike.

The sequence-to-sequence task's encoder-decoders (``seq2seq``: recurrent with attention;
``seq2seq_transformer``: the Transformer) share another interface, ``encode``/``start``/``step`` and
a teacher-forced ``forward``; ``build_seq2seq`` makes either from its config.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from seqlab.models.config import ModelConfig
from seqlab.models.feedforward import FeedForwardLM
from seqlab.models.lstm_attention import LSTMAttentionLM, State
from seqlab.models.seq2seq import EncoderDecoder, Seq2SeqConfig
from seqlab.models.seq2seq_transformer import TransformerEncoderDecoder
from seqlab.models.transformer import TransformerLM

KINDS = {"lstm_attention": LSTMAttentionLM, "transformer": TransformerLM, "feedforward": FeedForwardLM}
# the transformer's feed-forward width as recorded in an LSTM's checkpoint, where nothing reads it
# (the value earlier checkpoints carry, so the same training writes the same bytes)
UNUSED_FF_DIM = 1024

__all__ = ["KINDS", "FeedForwardLM", "LSTMAttentionLM", "ModelConfig", "State", "TransformerLM", "build", "build_seq2seq", "config_from_params",
           "count_parameters", "matched_ff_dim", "output_layer"]


def build(config: ModelConfig) -> nn.Module:
    return KINDS[config.kind](config)


def build_seq2seq(config: Seq2SeqConfig) -> nn.Module:
    """The encoder-decoder of ``config.kind``: recurrent with attention, or the Transformer."""
    return (TransformerEncoderDecoder if config.kind == "transformer" else EncoderDecoder)(config)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # tied weights are counted once


def matched_ff_dim(config: ModelConfig) -> int:
    """The transformer feed-forward width whose parameter count is closest to the LSTM-attention
    model with the same other settings (parameters grow linearly in the width)."""
    target = count_parameters(LSTMAttentionLM(replace(config, kind="lstm_attention")))
    small, large = (count_parameters(TransformerLM(replace(config, kind="transformer", ff_dim=w))) for w in (1, 2))
    per_unit = large - small
    return max(1, round(1 + (target - small) / per_unit))


def output_layer(spec: dict, vocab_size: int) -> tuple[dict, str | None]:
    """``model``'s output settings fitted to the vocabulary: adaptive-softmax cut-offs at or above its
    size are dropped, and with none left the full softmax is used. Returns the settings and a one-line
    note of what changed (None: nothing)."""
    if spec["output"] != "adaptive" or spec["cutoffs"][-1] < vocab_size:
        return spec, None
    kept = [c for c in spec["cutoffs"] if c < vocab_size]
    written = f"model.cutoffs {spec['cutoffs']} do not fit the vocabulary of {vocab_size}"
    if not kept:
        return {**spec, "output": "full", "cutoffs": []}, f"{written}: the full softmax is used (model.output: full)"
    return {**spec, "cutoffs": kept}, f"{written}: the adaptive softmax uses cut-offs {kept}"


def config_from_params(spec: dict, vocab_size: int) -> ModelConfig:
    """The architecture from params.yaml's ``model`` section and the vocabulary size (the output layer
    fitted to it by ``output_layer``); a transformer with ``ff_dim: null`` gets the feed-forward width
    that matches the LSTM-attention's size."""
    spec, _ = output_layer(dict(spec), vocab_size)
    ff_dim = spec.pop("ff_dim")
    config = ModelConfig(vocab_size=vocab_size, **{**spec, "cutoffs": tuple(spec["cutoffs"]), "ff_dim": UNUSED_FF_DIM})
    if config.kind == "transformer":
        config = replace(config, ff_dim=ff_dim or matched_ff_dim(config))
    return config
