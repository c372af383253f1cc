"""Transduction with a trained encoder-decoder: sources in, n-best target sequences out, batched, and
its evaluation on a split (teacher-forced cross-entropy, then decoded error rates against every
source's references).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from seqlab.edit_rates import ErrorRates, error_rates, nearest
from seqlab.errors import SeqLabError
from seqlab.io import read_json, sha256_text
from seqlab.models.decoding import Hypothesis, beam_search
from seqlab.pairs import Pair, references, strip_stress
from seqlab.training.seq2seq import batches, make_batch, mean_nll
from seqlab.vocab import PAIR_SPECIALS, Vocab, load_vocab


def vocabularies_sha256(source_vocab: Vocab, target_vocab: Vocab) -> str:
    """Identifies the pair of vocabularies an encoder-decoder was trained with."""
    return sha256_text(source_vocab.sha256 + target_vocab.sha256)


@dataclass(frozen=True)
class Transducer:
    """A trained encoder-decoder with its vocabularies and how it reads a source."""

    model: nn.Module
    source_vocab: Vocab
    target_vocab: Vocab
    source_chars: bool  # a source is a word read as characters (else whitespace-separated tokens)
    lowercase: bool
    max_length: int

    def read(self, text: str) -> tuple[str, ...]:
        text = text.lower() if self.lowercase else text
        return tuple(text.replace(" ", "")) if self.source_chars else tuple(text.split())


def load_transducer(path: str | Path) -> Transducer:
    """A model folder written by the seq2seq stage (``models/seq2seq/attention``), or its ``model.pt``."""
    from seqlab.models.checkpoint import SEQ2SEQ_FORMAT, load_checkpoint

    folder = Path(path)
    folder = folder.parent if folder.suffix == ".pt" else folder
    if not (folder / "model.pt").is_file():
        raise SeqLabError(f"{path}: not a sequence-to-sequence model folder (no model.pt); the seq2seq stage writes models/seq2seq/<name>")
    source_vocab, target_vocab = (load_vocab(folder / f"{side}_vocab", PAIR_SPECIALS) for side in ("source", "target"))
    model = load_checkpoint(folder / "model.pt", vocabularies_sha256(source_vocab, target_vocab), format=SEQ2SEQ_FORMAT)
    reading = read_json(folder / "scores.json").get("reading")
    if not isinstance(reading, dict):
        raise SeqLabError(f"{folder / 'scores.json'}: no 'reading' entry (how the model reads a source); retrain with `dvc repro`")
    return Transducer(model, source_vocab, target_vocab, bool(reading["source_chars"]), bool(reading["lowercase"]), int(reading["max_length"]))


def encode_pairs(pairs: Sequence[Pair], source_vocab: Vocab, target_vocab: Vocab) -> list[tuple[list[int], list[int]]]:
    return [(source_vocab.encode(p.source), target_vocab.encode(p.target)) for p in pairs]


@torch.no_grad()
def transduce(model: nn.Module, sources: Sequence[Sequence[str]], source_vocab: Vocab, target_vocab: Vocab, max_length: int,
              beam: int = 1, nbest: int = 1, alpha: float = 0.0, batch_size: int = 256, weights: bool = False,
              progress: bool = False) -> list[list[tuple[tuple[str, ...], Hypothesis]]]:
    """The ``nbest`` best target sequences of each source (its tokens, and the hypothesis with its
    scores), in the order of ``sources``; sources are batched by length."""
    from tqdm.auto import tqdm

    model.eval()
    device = next(model.parameters()).device
    order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
    out: list[list[tuple[tuple[str, ...], Hypothesis]]] = [[] for _ in sources]
    with tqdm(total=len(sources), unit="seq", desc="decode", disable=not progress, leave=False) as bar:
        for at in range(0, len(order), batch_size):
            chosen = order[at : at + batch_size]
            batch = make_batch([(source_vocab.encode(sources[i]), []) for i in chosen], device)
            found = beam_search(model, batch["source"], batch["lengths"], max_length, beam, nbest, alpha, weights)
            for i, hyps in zip(chosen, found):
                out[i] = [(tuple(target_vocab.decode(h.ids)), h) for h in hyps]
            bar.update(len(chosen))
    return out


@dataclass(frozen=True)
class Evaluation:
    xent_nats: float  # teacher-forced, per target token (</s> included)
    target_tokens: int
    rates: ErrorRates  # as the targets are written
    rates_without_stress: ErrorRates | None  # phonemes with stress digits, scored without them too
    bleu: float  # sacrebleu's corpus BLEU and chrF of the best hypotheses against each source's closest reference
    chrf: float
    hypotheses: list[tuple[tuple[str, ...], tuple[str, ...], float]]  # source, best hypothesis, its score

    @property
    def ppl(self) -> float:
        return math.exp(self.xent_nats)

    def as_dict(self) -> dict:
        out = {"target_xent_nats": self.xent_nats, "target_ppl": self.ppl, "target_tokens": self.target_tokens, "sources": self.rates.sources,
               "per": self.rates.token_error_rate, "wer": self.rates.sequence_error_rate, "bleu": self.bleu, "chrf": self.chrf}
        if self.rates_without_stress is not None:
            out |= {"per_without_stress": self.rates_without_stress.token_error_rate,
                    "wer_without_stress": self.rates_without_stress.sequence_error_rate}
        return out


def evaluate(model: nn.Module, pairs: Sequence[Pair], source_vocab: Vocab, target_vocab: Vocab, max_length: int, beam: int,
             alpha: float, batch_size: int, stressed: bool, progress: bool = False) -> Evaluation:
    """Cross-entropy over every pair, then each distinct source decoded once and scored against all its references."""
    device = next(model.parameters()).device
    encoded = encode_pairs(pairs, source_vocab, target_vocab)
    xent = mean_nll(model, batches(encoded, batch_size, device))
    grouped = references(list(pairs))
    sources = list(grouped)
    found = transduce(model, sources, source_vocab, target_vocab, max_length, beam, 1, alpha, batch_size, progress=progress)
    best = [hyps[0][0] for hyps in found]
    refs = [grouped[s] for s in sources]
    rates = error_rates(best, refs)
    plain = error_rates([strip_stress(h) for h in best], [[strip_stress(r) for r in rs] for rs in refs]) if stressed else None
    bleu, chrf = text_scores(best, refs)
    return Evaluation(xent, sum(len(t) + 1 for _, t in encoded), rates, plain, bleu, chrf,
                      [(s, h, hyps[0][1].score) for s, h, hyps in zip(sources, best, found)])


def text_scores(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> tuple[float, float]:
    """Corpus BLEU (tokens as written: ``tokenize="none"``) and chrF from ``sacrebleu``, each hypothesis
    against its source's closest reference (the one its error rate counts; sources differ in how many
    references they have)."""
    import sacrebleu

    chosen = [nearest(h, refs)[1] for h, refs in zip(hypotheses, references)]
    lines, targets = [" ".join(h) for h in hypotheses], [[" ".join(r) for r in chosen]]
    return sacrebleu.corpus_bleu(lines, targets, tokenize="none").score, sacrebleu.corpus_chrf(lines, targets).score


def plot_alignment(source: Sequence[str], target: Sequence[str], weights: torch.Tensor, path: str | Path) -> None:
    """The attention of each output step (rows: the target tokens and ``</s>``) over the source."""
    from seqlab.plots import pyplot, save

    plt = pyplot()
    rows = [*target, "</s>"]
    fig, ax = plt.subplots(figsize=(max(3.0, 0.45 * len(source) + 1.5), max(2.5, 0.4 * len(rows) + 1.2)))
    image = ax.imshow(weights.numpy(), cmap="viridis", vmin=0.0, vmax=1.0, aspect="auto")
    ax.set_xticks(range(len(source)), list(source))
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("source")
    ax.set_ylabel("output")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_title(f"{''.join(source) if all(len(s) == 1 for s in source) else ' '.join(source)} -> {' '.join(target)}", fontsize="small")
    fig.tight_layout()
    save(fig, path)
