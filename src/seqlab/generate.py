"""Prediction, generation and attention heatmaps, on a model from ``seqlab.loading``.

Every model predicts the next token; only neural models generate and draw attention. Text is
tokenized with the project's tokenizer and read as the start of a sequence (after ``<s>``).
Generation feeds the prompt once, then one token at a time, carrying the recurrent state and the
attention cache: no step re-reads the prefix.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from seqlab.errors import SeqLabError
from seqlab.loading import Loaded
from seqlab.plots import pyplot, save
from seqlab.vocab import BOS, EOS, UNK

NOT_NEURAL = "generation needs a neural model (this is an n-gram model or a hybrid); `seqlab predict` works with every model"


def encode_prompt(loaded: Loaded, text: str) -> list[int]:
    return [loaded.vocab.index[BOS], *loaded.vocab.encode(loaded.tokenizer.tokenize(text))]


def predict(loaded: Loaded, context: str, top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` most likely next tokens after ``context`` (0: all) and their probabilities."""
    if top_k < 0:
        raise SeqLabError(f"--top-k must be 0 (all) or more (got {top_k})")
    probs = np.exp(loaded.scorer.next_log_probs(encode_prompt(loaded, context)))
    best = np.argsort(-probs, kind="stable")[: top_k or None]
    return [(loaded.vocab.tokens[i], float(probs[i])) for i in best]


@dataclass
class Generation:
    tokens: list[str]  # the prompt (after <s>) and the generated tokens
    prompt_length: int
    prompt_seconds: float
    generate_seconds: float
    attention: list[tuple[int, np.ndarray]] = field(default_factory=list)  # (first attended position, weights) per input position

    @property
    def generated(self) -> list[str]:
        return self.tokens[self.prompt_length :]

    @property
    def tokens_per_s(self) -> float:
        return len(self.generated) / self.generate_seconds if self.generate_seconds else float("inf")


def check_sampling(temperature: float, top_k: int) -> None:
    """The sampling options, refused in one line before any model is loaded."""
    if not (math.isfinite(temperature) and temperature > 0):
        raise SeqLabError(f"--temperature must be a positive number (got {temperature})")
    if top_k < 0:
        raise SeqLabError(f"--top-k must be 0 (all) or more (got {top_k})")


@torch.no_grad()
def generate(loaded: Loaded, prompt: str, max_tokens: int = 60, temperature: float = 1.0, top_k: int = 0,
             seed: int | None = None, need_weights: bool = False) -> Generation:
    """Sample ``max_tokens`` tokens after ``prompt``. ``<unk>`` and ``<s>`` are never sampled; after a
    sampled ``</s>`` the model is fed ``<s>`` and goes on with a new sequence."""
    check_sampling(temperature, top_k)
    model, vocab = loaded.network, loaded.vocab
    if model is None:
        raise SeqLabError(NOT_NEURAL)
    device = next(model.parameters()).device
    generator = torch.Generator(device="cpu")
    if seed is not None:
        generator.manual_seed(seed)
    banned = torch.tensor([vocab.index[UNK], vocab.index[BOS]])
    ids = encode_prompt(loaded, prompt)
    result = Generation([vocab.tokens[i] for i in ids[1:]], len(ids) - 1, 0.0, 0.0)

    started = time.perf_counter()
    inputs = torch.tensor([ids], device=device)
    features, state, weights = model(inputs, model.init_state(1, device), need_weights)
    if weights is not None:  # row t may attend to positions t - memory .. t
        for t, row in enumerate(weights[0].float().cpu().numpy()):
            first = max(0, t - model.config.memory)
            result.attention.append((first, row[first : t + 1]))
    position = len(ids) - 1  # absolute position of the last input
    result.prompt_seconds = time.perf_counter() - started

    started = time.perf_counter()
    for _ in range(max_tokens):
        log_probs = model.output.log_probs(features[0, -1]).float().cpu() / temperature
        log_probs[banned] = float("-inf")
        if top_k:
            threshold = log_probs.topk(min(top_k, len(log_probs))).values[-1]
            log_probs[log_probs < threshold] = float("-inf")
        token = int(torch.multinomial(torch.softmax(log_probs, dim=-1), 1, generator=generator))
        result.tokens.append(vocab.tokens[token])
        step = [token, vocab.index[BOS]] if token == vocab.index[EOS] else [token]
        for fed in step:
            features, state, weights = model(torch.tensor([[fed]], device=device), state, need_weights)
            position += 1
            if weights is not None:
                row = weights[0, -1].float().cpu().numpy()
                result.attention.append((position - len(row) + 1, row))
    result.generate_seconds = time.perf_counter() - started
    return result


def detokenize(loaded: Loaded, tokens: list[str]) -> str:
    lines, line = [], []
    for token in tokens:
        if token == EOS:
            lines.append(line)
            line = []
        else:
            line.append(token)
    lines.append(line)
    return "\n".join(loaded.tokenizer.detokenize(words) for words in lines)


def plot_attention(generation: Generation, path: str | Path, last: int = 80) -> None:
    """Heatmap of attention weights: a row per predicted position (labelled with the token it
    predicts), a column per attended position (labelled with its token); the last ``last`` rows."""
    plt = pyplot()
    if not generation.attention:
        raise SeqLabError("this model has no attention weights to show (model.attention: none)")
    inputs = [BOS, *_fed_tokens(generation.tokens)]  # the token at each input position
    rows = generation.attention[-last:]
    first_row = len(generation.attention) - len(rows)
    first_col = min(start for start, _ in rows)
    cols = len(generation.attention) - first_col
    grid = np.full((len(rows), cols), np.nan)
    for r, (start, weights) in enumerate(rows):
        grid[r, start - first_col : start - first_col + len(weights)] = weights
    predicted = [*inputs[first_row + 1 : first_row + 1 + len(rows)]]
    predicted += ["…"] * (len(rows) - len(predicted))
    size = max(6.0, 0.16 * max(len(rows), cols))
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    # the scale stops at the 99th percentile: a few near-1 weights (the first tokens have little to
    # attend to) would otherwise flatten everything else to one colour
    top = float(np.nanpercentile(grid, 99))
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto", interpolation="nearest", vmin=0, vmax=top)
    ax.set_xticks(range(cols), inputs[first_col : first_col + cols], rotation=90, fontsize=7)
    ax.set_yticks(range(len(rows)), [f"→ {t}" for t in predicted], fontsize=7)
    ax.set_xlabel("attended position (input token)")
    ax.set_ylabel("predicted position (token predicted)")
    ax.set_title("Attention weights while generating (blank: outside the attention span)")
    fig.colorbar(image, ax=ax, fraction=0.03, extend="max", label="attention weight")
    fig.tight_layout()
    save(fig, path, dpi=110)


def _fed_tokens(tokens: list[str]) -> list[str]:
    """The tokens fed after the initial <s>: every token, with <s> after each </s>."""
    fed = []
    for token in tokens:
        fed.append(token)
        if token == EOS:
            fed.append(BOS)
    return fed
