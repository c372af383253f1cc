"""Prediction, generation and attention heatmaps.

A model is given as a file of the project (a neural ``model.pt``, an n-gram ``model.npz``, a hybrid's
``hybrid.json``, with the project's vocabulary and tokenizer) or as an MLflow model URI
(``models:/seqlab-hybrid@champion``, ``models:/seqlab-lstm_attention/3``, ``runs:/<id>/model``),
whose registered version carries its model files, vocabulary and tokenizer. Checkpoints are read
with ``weights_only=True``; nothing pickled is executed.

Every model predicts the next token; only neural models generate and draw attention. Text is
tokenized with the project's tokenizer and read as the start of a sequence (after ``<s>``).
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
from seqlab.evaluate import LanguageModel, open_model
from seqlab.tokenize import Tokenizer, load_tokenizer
from seqlab.vocab import BOS, EOS, UNK, Vocab, load_vocab


NOT_NEURAL = "generation needs a neural model (this is an n-gram model or a hybrid); `seqlab predict` works with every model"


@dataclass
class Loaded:
    model: nn.Module | None  # the network of a neural model (generation, attention); None otherwise
    vocab: Vocab
    tokenizer: Tokenizer
    scorer: LanguageModel  # what predicts: NeuralLM, an n-gram model or a hybrid


def load(model: str, vocab_dir: str | Path = "data/vocab", tokenizer_path: str | Path = "data/tokens/tokenizer.json",
         device: str = "cpu") -> Loaded:
    """A model file or an MLflow ``models:/`` / ``runs:/`` URI, with its vocabulary and tokenizer."""
    if model.startswith(("models:/", "runs:/")):
        return load_files(_download(model), model, device)
    vocab = load_vocab(vocab_dir)
    if not Path(tokenizer_path).is_file():
        raise SeqLabError(f"{tokenizer_path}: tokenizer not found (run `dvc repro tokenize`, or pass --tokenizer)")
    return _loaded(open_model(model, vocab, device=device), vocab, load_tokenizer(tokenizer_path))


def load_files(root: Path, name: str, device: str = "cpu") -> Loaded:
    """A registered model's files as downloaded: ``extra_files/`` (PyTorch flavour: model.pt,
    vocab.tsv/json, tokenizer.json) or ``artifacts/`` (pyfunc: hybrid.json or model.npz, vocab/,
    tokenizer.json); ``root`` may also be that folder itself."""
    for files in (root / "extra_files", root / "artifacts", root):
        found = [files / f for f in ("hybrid.json", "model.pt", "model.npz") if (files / f).is_file()]
        if found:
            break
    else:
        raise SeqLabError(f"{name}: not a SeqLab model (no model.pt, hybrid.json or model.npz among its files)")
    vocab = load_vocab(files / "vocab" if (files / "vocab").is_dir() else files)
    if not (files / "tokenizer.json").is_file():
        raise SeqLabError(f"{name}: no tokenizer.json among its files (registered before models carried one; rerun its stage)")
    return _loaded(open_model(found[0], vocab, files=files, device=device), vocab, load_tokenizer(files / "tokenizer.json"))


def _loaded(scorer: LanguageModel, vocab: Vocab, tokenizer: Tokenizer) -> Loaded:
    from seqlab.models.scoring import NeuralLM

    return Loaded(scorer.model if isinstance(scorer, NeuralLM) else None, vocab, tokenizer, scorer)


def _download(uri: str) -> Path:
    import mlflow

    from seqlab.tracking import connect

    connect()
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as err:  # MlflowException and storage errors alike: one line for the user
        raise SeqLabError(f"{uri}: cannot fetch the model: {str(err).splitlines()[0][:200]}") from None


def encode_prompt(loaded: Loaded, text: str) -> list[int]:
    return [loaded.vocab.index[BOS], *loaded.vocab.encode(loaded.tokenizer.tokenize(text))]


@torch.no_grad()
def next_log_probs(loaded: Loaded, ids: list[int], scorer: LanguageModel | None = None) -> np.ndarray:
    """Natural-log probability of every vocabulary id after ``ids`` (which start at ``<s>`` for a
    sequence start); sums to 1 in probability for every kind of model."""
    from seqlab.hybrid import Interpolated, mix
    from seqlab.models.scoring import NeuralLM
    from seqlab.ngram.next_token import next_token_probs

    scorer = loaded.scorer if scorer is None else scorer
    if isinstance(scorer, Interpolated):
        return mix([next_log_probs(loaded, ids, part) for part in scorer.models], scorer.weights)
    if isinstance(scorer, NeuralLM):
        model = scorer.model
        inputs = torch.tensor([ids], device=next(model.parameters()).device)
        features, _, _ = model(inputs, model.init_state(1, inputs.device))
        return model.output.log_probs(features[0, -1]).double().cpu().numpy()
    with np.errstate(divide="ignore"):
        return np.log(next_token_probs(scorer, loaded.vocab, [loaded.vocab.tokens[i] for i in ids]))


def predict(loaded: Loaded, context: str, top_k: int = 5) -> list[tuple[str, float]]:
    """The ``top_k`` most likely next tokens after ``context`` (0: all) and their probabilities."""
    if top_k < 0:
        raise SeqLabError(f"--top-k must be 0 (all) or more (got {top_k})")
    probs = np.exp(next_log_probs(loaded, encode_prompt(loaded, context)))
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


@torch.no_grad()
def generate(loaded: Loaded, prompt: str, max_tokens: int = 60, temperature: float = 1.0, top_k: int = 0,
             seed: int | None = None, need_weights: bool = False) -> Generation:
    """Sample ``max_tokens`` tokens after ``prompt``. ``<unk>`` and ``<s>`` are never sampled; after a
    sampled ``</s>`` the model is fed ``<s>`` and goes on with a new sequence."""
    if temperature <= 0:
        raise SeqLabError(f"--temperature must be positive (got {temperature})")
    model, vocab = loaded.model, loaded.vocab
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
