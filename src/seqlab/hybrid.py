"""The hybrid: a linear interpolation of language models, ``p(w | h) = sum_i weight_i * p_i(w | h)``.

The weights are fitted on valid: the log-likelihood is concave in them, so the optimum is global.
Two models (the hybrid) get it exactly, by bisection on the derivative; more get EM (each step sets a
weight to the mean posterior share of its model; the valid likelihood never decreases). A weight of 1
on one model is among the candidates, so on valid the hybrid is never worse than its best part.
``best_mix`` picks the n-gram part: of several candidates, the one whose fitted mix is best on
held-out data. On disk a hybrid is ``hybrid.json``: each part's file, its MD5 and its weight, and
the candidates' mixes it was chosen from.
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
    """The interpolation weights that maximise the likelihood of held-out positions; returns (weights,
    iterations). Two models (the hybrid): the exact optimum, ``_weight_of_two``. More: EM, stopped
    when no weight moves by ``tolerance``."""
    stacked = np.stack(log_probs)
    stacked = stacked[:, np.isfinite(stacked).any(axis=0)]  # a position no model can score says nothing
    if len(stacked) == 2:
        weight, steps = _weight_of_two(stacked[0], stacked[1])
        return np.array([weight, 1 - weight]), steps
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


def _weight_of_two(a: np.ndarray, b: np.ndarray, tolerance: float = 1e-12) -> tuple[float, int]:
    """The weight ``w`` of the first model maximising ``mean log(w p_a + (1 - w) p_b)``, and the
    bisection steps taken. The mean is concave in ``w``, so the optimum is where its derivative
    ``mean((p_a - p_b) / (w p_a + (1 - w) p_b))`` crosses zero, or an end of [0, 1] where it keeps one
    sign. EM would get there by a factor of about the mean likelihood ratio a step: with two models
    that are alike and an optimum near an end it stalls for thousands of steps (an add-k model and a
    neural model of a Markov chain: 500 steps left the weight at 0.23, worse on valid than add-k alone)."""
    top = np.maximum(a, b)  # finite: every position has a model that scores it
    p, q = np.exp(a - top), np.exp(b - top)

    def slope(w: float) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(np.mean((p - q) / (w * p + (1 - w) * q)))

    if slope(0.0) <= 0:
        return 0.0, 1
    if slope(1.0) >= 0:
        return 1.0, 1
    low, high, steps = 0.0, 1.0, 0
    while high - low > tolerance:
        middle, steps = (low + high) / 2, steps + 1
        low, high = (middle, high) if slope(middle) > 0 else (low, middle)
    return (low + high) / 2, steps


def best_mix(neural: np.ndarray, ngrams: dict[str, np.ndarray]) -> tuple[str, np.ndarray, int, dict[str, float]]:
    """The n-gram model whose mix with the neural model is best on held-out positions: its name, the
    weights (neural first), the fit's steps, and every candidate's mix in nats per token (the name
    first in order wins a tie)."""
    fits = {}
    for name in sorted(ngrams):
        weights, iterations = fit_weights([neural, ngrams[name]])
        fits[name] = (float(-mix([neural, ngrams[name]], weights).mean()), weights, iterations)
    chosen = min(fits, key=lambda name: fits[name][0])
    return chosen, fits[chosen][1], fits[chosen][2], {name: fit[0] for name, fit in fits.items()}


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


def spec(parts: Sequence[tuple[str, str | Path]], weights: Sequence[float], iterations: int,
         candidates: dict[str, float] | None = None) -> dict:
    """What ``hybrid.json`` holds: each part's model name, file, MD5 and weight, and the valid nats per
    token of each n-gram model's mix it was chosen from."""
    fit = {"method": "maximum likelihood on valid", "iterations": iterations}
    if candidates:
        fit["candidates_valid_nats"] = {name: round(nats, 6) for name, nats in candidates.items()}
    return {
        "parts": [{"model": name, "file": str(path), "md5": md5_file(path), "weight": float(w)}
                  for (name, path), w in zip(parts, weights)],
        "fit": fit,
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
