"""The hybrid: a linear interpolation of language models, ``p(w | h) = sum_i weight_i * p_i(w | h)``.

The weights are fitted on valid by EM (each step sets a weight to the mean posterior share of its
model; the valid likelihood never decreases and the optimum is global, since the log-likelihood is
concave in the weights). A weight of 1 on one model is among the candidates, so on valid the hybrid
is never worse than its best part. On disk a hybrid is ``hybrid.json``: each part's file, its MD5 and
its weight.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from seqlab.errors import SeqLabError
from seqlab.io import md5_file, read_json
from seqlab.plots import pyplot, save
from seqlab.scoring import LanguageModel, Segments


def mix(log_probs: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """log of ``sum_i weights[i] * exp(log_probs[i])``, position by position."""
    with np.errstate(divide="ignore"):
        log_weights = np.log(np.asarray(weights, dtype=np.float64))
    return np.logaddexp.reduce(np.stack(log_probs) + log_weights[:, None], axis=0)


def fit_weights(log_probs: Sequence[np.ndarray], tolerance: float = 1e-7, max_iterations: int = 500) -> tuple[np.ndarray, int]:
    """EM for the interpolation weights on held-out positions; returns (weights, iterations)."""
    stacked = np.stack(log_probs)
    stacked = stacked[:, np.isfinite(stacked).any(axis=0)]  # a position no model can score says nothing
    weights = np.full(len(stacked), 1 / len(stacked))
    for iteration in range(1, max_iterations + 1):
        with np.errstate(divide="ignore"):
            joint = stacked + np.log(weights)[:, None]
        posterior = np.exp(joint - np.logaddexp.reduce(joint, axis=0))
        updated = posterior.mean(axis=1)
        done = np.abs(updated - weights).max() < tolerance
        weights = updated / updated.sum()
        if done:
            break
    return weights, iteration


class Interpolated:
    """Models mixed with fixed weights, in the shape ``evaluate.score`` expects."""

    def __init__(self, models: Sequence[LanguageModel], weights: Sequence[float]):
        if len(models) != len(weights) or not np.isclose(sum(weights), 1) or min(weights) < 0:
            raise SeqLabError(f"interpolation weights must be non-negative and sum to 1 (got {list(weights)})")
        self.models, self.weights = list(models), [float(w) for w in weights]

    def log_probs(self, segments: Segments) -> np.ndarray:
        return mix([model.log_probs(segments) for model in self.models], self.weights)

    def next_log_probs(self, ids: Sequence[int]) -> np.ndarray:
        return mix([model.next_log_probs(ids) for model in self.models], self.weights)


class Remembered:
    """A model whose log-probabilities are kept per segments object: fitting, scoring and the weight
    curve read the same positions again, and a neural pass is the slow part."""

    def __init__(self, model: LanguageModel):
        self.model, self._seen = model, {}

    def log_probs(self, segments: Segments) -> np.ndarray:
        key = id(segments)
        if key not in self._seen:
            self._seen[key] = (segments, self.model.log_probs(segments))  # holding segments keeps the id unique
        return self._seen[key][1]

    def next_log_probs(self, ids: Sequence[int]) -> np.ndarray:
        return self.model.next_log_probs(ids)


def spec(parts: Sequence[tuple[str, str | Path]], weights: Sequence[float], iterations: int) -> dict:
    """What ``hybrid.json`` holds: each part's model name, file, MD5 and weight."""
    return {
        "parts": [{"model": name, "file": str(path), "md5": md5_file(path), "weight": float(w)}
                  for (name, path), w in zip(parts, weights)],
        "fit": {"method": "EM on valid", "iterations": iterations},
    }


def load_spec(path: str | Path, files: str | Path | None = None) -> list[tuple[Path, float]]:
    """The parts of a ``hybrid.json`` as (file, weight); ``files`` is a directory holding the parts
    under their own names (a registered model's artifacts) instead of their recorded paths. A part
    whose MD5 differs from the one fitted is refused."""
    try:
        parts = read_json(path)["parts"]
        found = [((Path(files) / Path(p["file"]).name) if files else Path(p["file"]), float(p["weight"]), p["md5"]) for p in parts]
    except (KeyError, TypeError, ValueError) as err:
        raise SeqLabError(f"{path}: not a hybrid model file ({err})") from None
    for file, _, digest in found:
        if not file.is_file():
            raise SeqLabError(f"{path}: part {file} not found")
        if md5_file(file) != digest:
            raise SeqLabError(f"{path}: part {file} has changed since the weights were fitted; rerun `dvc repro hybrid`")
    return [(file, weight) for file, weight, _ in found]


def weight_curve(log_probs: Sequence[np.ndarray], points: int = 51) -> tuple[np.ndarray, np.ndarray]:
    """Perplexity of a two-model mix against the first model's weight, 0..1."""
    first = np.linspace(0, 1, points)
    return first, np.array([np.exp(-mix(log_probs, [w, 1 - w]).mean()) for w in first])


def plot_weights(valid: Sequence[np.ndarray], test: Sequence[np.ndarray], weight: float, names: Sequence[str], path: str | Path) -> None:
    """Valid and test perplexity against the weight of the first model, the fitted weight marked."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for split, log_probs in (("valid", valid), ("test", test)):
        x, ppl = weight_curve(log_probs)
        ax.plot(x, ppl, label=split)
        fitted = float(np.exp(-mix(log_probs, [weight, 1 - weight]).mean()))
        ax.plot([weight], [fitted], marker="*", markersize=12, color="black", linestyle="none")
        ax.annotate(f"{fitted:.2f}", (weight, fitted), textcoords="offset points", xytext=(6, -12), fontsize="small")
    ax.axvline(weight, color="grey", linestyle=":", label=f"fitted on valid: {weight:.3f}")
    ax.set_xlabel(f"weight of {names[0]} (the rest: {names[1]})")
    ax.set_ylabel("perplexity")
    ax.set_title("The hybrid: perplexity by interpolation weight")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    save(fig, path)
