"""The output layer: a full softmax (optionally tied to the embedding) or an adaptive softmax.

Both answer the same two questions, so training and scoring share one path:
``target_log_probs`` (the log-probability of each target; its negative mean is the loss) and
``log_probs`` (the whole next-token distribution, for prediction and generation).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class Output(nn.Module):
    def __init__(self, dim: int, vocab_size: int, kind: str, cutoffs: tuple[int, ...], div_value: float, tied: nn.Embedding | None):
        super().__init__()
        self.kind = kind
        if kind == "adaptive":
            # the vocabulary is ordered by train frequency, which is what the clusters assume
            self.adaptive = nn.AdaptiveLogSoftmaxWithLoss(dim, vocab_size, list(cutoffs), div_value=div_value, head_bias=True)
        elif kind == "full":
            self.decoder = nn.Linear(dim, vocab_size)
            if tied is not None:
                self.decoder.weight = tied.weight
        else:
            raise ValueError(f"unknown output layer {kind!r}")

    def target_log_probs(self, features: Tensor, targets: Tensor) -> Tensor:
        """features (..., dim), targets (...) -> log p(target) (...), natural log, float32."""
        flat, shape = _autocast_dtype(features.reshape(-1, features.shape[-1])), targets.shape
        if self.kind == "adaptive":
            return self.adaptive(flat, targets.reshape(-1)).output.float().view(shape)
        log_probs = torch.log_softmax(self.decoder(flat).float(), dim=-1)
        return log_probs.gather(1, targets.reshape(-1, 1)).view(shape)

    def log_probs(self, features: Tensor) -> Tensor:
        """features (..., dim) -> log-probabilities over the vocabulary (..., V), float32."""
        flat = _autocast_dtype(features.reshape(-1, features.shape[-1]))
        if self.kind == "adaptive":
            out = self.adaptive.log_prob(flat).float()
        else:
            out = torch.log_softmax(self.decoder(flat).float(), dim=-1)
        return out.view(*features.shape[:-1], -1)


def _autocast_dtype(features: Tensor) -> Tensor:
    """Under autocast, features in the autocast dtype: the adaptive softmax writes its clusters'
    log-probabilities (computed in that dtype) into a tensor of the features' dtype, so the two must
    agree (a LayerNorm before it, as in the Transformer, hands over float32)."""
    kind = features.device.type
    return features.to(torch.get_autocast_dtype(kind)) if torch.is_autocast_enabled(kind) else features
