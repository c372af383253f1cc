"""Transduction with a trained encoder-decoder: sources in, n-best target sequences out, batched, and
its evaluation on a split (teacher-forced cross-entropy, then decoded error rates against every
source's references).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from seqlab.edit_rates import ErrorRates, error_rates
from seqlab.models.decoding import Hypothesis, beam_search
from seqlab.pairs import Pair, references, strip_stress
from seqlab.training.seq2seq import batches, make_batch, mean_nll
from seqlab.vocab import Vocab


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
    hypotheses: list[tuple[tuple[str, ...], tuple[str, ...], float]]  # source, best hypothesis, its score

    @property
    def ppl(self) -> float:
        return math.exp(self.xent_nats)

    def as_dict(self) -> dict:
        out = {"xent_nats": self.xent_nats, "ppl": self.ppl, "target_tokens": self.target_tokens, "sources": self.rates.sources,
               "per": self.rates.token_error_rate, "wer": self.rates.sequence_error_rate}
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
    return Evaluation(xent, sum(len(t) + 1 for _, t in encoded), rates, plain,
                      [(s, h, hyps[0][1].score) for s, h, hyps in zip(sources, best, found)])
