"""Decoding an encoder-decoder: batched greedy search and batched beam search with n-best lists.

Beam search keeps ``beam`` hypotheses per source. A hypothesis that has produced ``</s>`` is finished:
it stays in the beam with its score frozen (its extensions are all masked but one, at no cost), so
finished and open hypotheses compete by their summed log-probability, and the search stops when every
source's beam is finished; after ``max_length`` target tokens only ``</s>`` may follow. The n-best list is the beam
ranked by score / ((5 + length) / 6) ** length_penalty (GNMT's penalty; 0 keeps the summed
log-probability, and the first hypothesis is then the highest-scoring one the beam found).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seqlab.models.seq2seq import BOS, EOS, PAD, EncoderDecoder, length_penalty, select


@dataclass(frozen=True)
class Hypothesis:
    ids: tuple[int, ...]  # target ids without <s> and </s>
    score: float  # summed log-probability (natural log), </s> included
    normalized: float  # the score the n-best list is ranked by
    weights: Tensor | None  # (target length + 1, source length) attention weights, when asked


def allowed(log_probs: Tensor, last: bool) -> Tensor:
    """``<pad>`` and ``<s>`` are never decoded, and after ``max_length`` tokens only ``</s>`` is:
    the others' log-probabilities set to -inf."""
    log_probs = log_probs.clone()
    if last:
        keep = log_probs[:, EOS].clone()
        log_probs.fill_(float("-inf"))
        log_probs[:, EOS] = keep
    else:
        log_probs[:, [PAD, BOS]] = float("-inf")
    return log_probs


@torch.no_grad()
def greedy(model: EncoderDecoder, source: Tensor, lengths: Tensor, max_length: int, weights: bool = False) -> list[Hypothesis]:
    """The most probable next token at every step, for a batch of sources."""
    memory = model.encode(source, lengths)
    state = model.start(memory)
    B = source.shape[0]
    previous = torch.full((B,), BOS, dtype=torch.long, device=source.device)
    done = torch.zeros(B, dtype=torch.bool, device=source.device)
    scores = torch.zeros(B, device=source.device)
    tokens, attended = [], []
    for t in range(max_length + 1):
        log_probs, state, step_weights = model.step(previous, state, memory)
        best, previous = allowed(log_probs, t == max_length).max(dim=-1)
        scores += torch.where(done, torch.zeros_like(best), best)
        previous = torch.where(done, torch.full_like(previous, PAD), previous)
        tokens.append(previous)
        if weights and step_weights is not None:
            attended.append(step_weights)
        done |= previous == EOS
        if bool(done.all()):
            break
    ids = torch.stack(tokens, dim=1).tolist()
    stacked = torch.stack(attended, dim=1) if attended else None
    out = []
    for b in range(B):
        row = ids[b]
        n = row.index(EOS)
        w = stacked[b, : n + 1, : int(lengths[b])].cpu() if stacked is not None else None
        out.append(Hypothesis(tuple(row[:n]), float(scores[b]), float(scores[b]), w))
    return out


@torch.no_grad()
def beam_search(model: EncoderDecoder, source: Tensor, lengths: Tensor, max_length: int, beam: int,
                nbest: int = 1, alpha: float = 0.0, weights: bool = False) -> list[list[Hypothesis]]:
    """The ``nbest`` best of ``beam`` hypotheses per source (best first)."""
    if beam == 1:
        return [[h] for h in greedy(model, source, lengths, max_length, weights)]
    B, K = source.shape[0], beam
    device = source.device
    memory = model.encode(source, lengths)
    expand = torch.arange(B, device=device).repeat_interleave(K)
    memory = select(memory, expand)
    state = model.start(memory)
    scores = torch.full((B, K), float("-inf"), device=device)
    scores[:, 0] = 0.0  # one open hypothesis per source to begin with
    previous = torch.full((B * K,), BOS, dtype=torch.long, device=device)
    finished = torch.zeros(B * K, dtype=torch.bool, device=device)
    history = torch.zeros(B * K, 0, dtype=torch.long, device=device)
    attended = torch.zeros(B * K, 0, memory["mask"].shape[1], device=device) if weights else None
    for t in range(max_length + 1):
        log_probs, state, step_weights = model.step(previous, state, memory)
        log_probs = allowed(log_probs, t == max_length)
        V = log_probs.shape[-1]
        # a finished hypothesis continues only with PAD, at no cost
        frozen = torch.full_like(log_probs, float("-inf"))
        frozen[:, PAD] = 0.0
        log_probs = torch.where(finished.unsqueeze(1), frozen, log_probs)
        candidates = (scores.view(-1, 1) + log_probs).view(B, K * V)
        scores, flat = candidates.topk(K, dim=-1)  # (B, K)
        origin = (flat // V + torch.arange(B, device=device).unsqueeze(1) * K).view(-1)
        previous = (flat % V).view(-1)
        state = select(state, origin)
        history = torch.cat([history.index_select(0, origin), previous.unsqueeze(1)], dim=1)
        if attended is not None and step_weights is not None:
            attended = torch.cat([attended.index_select(0, origin), step_weights.index_select(0, origin).unsqueeze(1).float()], dim=1)
        finished = finished.index_select(0, origin) | (previous == EOS)
        if bool(finished.all()):
            break
    rows = history.tolist()  # every row holds </s>: the last step allows nothing else
    lengths_out = torch.tensor([row.index(EOS) + 1 for row in rows], device=device)
    normalized = (scores.view(-1) / length_penalty(lengths_out, alpha)).view(B, K)
    out = []
    for b in range(B):
        order = normalized[b].argsort(descending=True).tolist()[:nbest]
        hyps = []
        for k in order:
            i = b * K + k
            n = int(lengths_out[i]) - 1
            w = attended[i, : n + 1, : int(lengths[b])].cpu() if attended is not None and attended.shape[1] else None
            hyps.append(Hypothesis(tuple(rows[i][:n]), float(scores[b, k]), float(normalized[b, k]), w))
        out.append(hyps)
    return out
