"""Prediction, generation and attention heatmaps for a trained neural model.

A model is given as a checkpoint path (with the vocabulary and tokenizer of the project) or as an
MLflow model URI (``models:/seqlab-lstm_attention/3``, ``models:/seqlab-lstm_attention@champion``,
``runs:/<id>/model``), whose registered version carries its checkpoint, vocabulary and tokenizer.
Either way the weights are read with ``weights_only=True``; nothing pickled is executed.

Text is tokenized with the project's tokenizer and read as the start of a sequence (after ``<s>``).
Generation feeds the prompt once, then one token at a time, carrying the recurrent state and the
attention cache: no step re-reads the prefix.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seqlab.errors import SeqLabError
from seqlab.models.checkpoint import load_checkpoint
from seqlab.tokenize import Tokenizer, load_tokenizer
from seqlab.vocab import BOS, EOS, UNK, Vocab, load_vocab


@dataclass
class Loaded:
    model: nn.Module
    vocab: Vocab
    tokenizer: Tokenizer


def load(model: str, vocab_dir: str | Path = "data/vocab", tokenizer_path: str | Path = "data/tokens/tokenizer.json",
         device: str = "cpu") -> Loaded:
    """A checkpoint path, or an MLflow ``models:/`` / ``runs:/`` URI, with its vocabulary and tokenizer."""
    if model.startswith(("models:/", "runs:/")):
        files = _download(model) / "extra_files"
        checkpoint, vocab_dir, tokenizer_path = files / "model.pt", files, files / "tokenizer.json"
        if not checkpoint.is_file():
            raise SeqLabError(f"{model}: not a SeqLab neural model (no model.pt among its files)")
    else:
        checkpoint = Path(model)
    vocab = load_vocab(vocab_dir)
    if not Path(tokenizer_path).is_file():
        raise SeqLabError(f"{tokenizer_path}: tokenizer not found (run `dvc repro tokenize`, or pass --tokenizer)")
    return Loaded(load_checkpoint(checkpoint, vocab.sha256, device), vocab, load_tokenizer(tokenizer_path))


def _download(uri: str) -> Path:
    import mlflow

    from seqlab.tracking import project_root, tracking_uri

    mlflow.set_tracking_uri(tracking_uri(project_root()))
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as err:  # MlflowException and storage errors alike: one line for the user
        raise SeqLabError(f"{uri}: cannot fetch the model: {str(err).splitlines()[0][:200]}") from None


def encode_prompt(loaded: Loaded, text: str) -> list[int]:
    return [loaded.vocab.index[BOS], *loaded.vocab.encode(loaded.tokenizer.tokenize(text))]


@torch.no_grad()
def predict(loaded: Loaded, context: str, top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` most likely next tokens after ``context`` and their probabilities."""
    model = loaded.model
    ids = torch.tensor([encode_prompt(loaded, context)], device=next(model.parameters()).device)
    features, _, _ = model(ids, model.init_state(1, ids.device))
    probs = model.output.log_probs(features[0, -1]).exp()
    values, indices = probs.topk(min(top_k, len(probs)))
    return [(loaded.vocab.tokens[i], float(p)) for p, i in zip(values.tolist(), indices.tolist())]


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


@torch.no_grad()
def generate(loaded: Loaded, prompt: str, max_tokens: int = 60, temperature: float = 1.0, top_k: int = 0,
             seed: int | None = None, need_weights: bool = False) -> Generation:
    """Sample ``max_tokens`` tokens after ``prompt``. ``<unk>`` and ``<s>`` are never sampled; after a
    sampled ``</s>`` the model is fed ``<s>`` and goes on with a new sequence."""
    if temperature <= 0:
        raise SeqLabError(f"--temperature must be positive (got {temperature})")
    model, vocab = loaded.model, loaded.vocab
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from seqlab.io import atomic_path

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
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)


def _fed_tokens(tokens: list[str]) -> list[str]:
    """The tokens fed after the initial <s>: every token, with <s> after each </s>."""
    fed = []
    for token in tokens:
        fed.append(token)
        if token == EOS:
            fed.append(BOS)
    return fed
