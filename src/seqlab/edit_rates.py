"""Error rates of decoded sequences against a source's references, by the Sequitur convention.

For each source, the reference closest to the hypothesis (fewest edits: substitutions, insertions and
deletions, from the ``editdistance`` library) is the one it is scored against:

- token error rate (PER for phonemes): the summed edits over the summed lengths of those references;
- sequence error rate (WER for words): the share of sources whose closest reference needs any edit.

Ties between references go to the shorter one, then the first listed, so a score never depends on
the order of a source's pronunciations beyond that.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import editdistance


@dataclass(frozen=True)
class ErrorRates:
    sources: int
    tokens: int  # the closest references' tokens
    token_errors: int
    sequence_errors: int

    @property
    def token_error_rate(self) -> float:
        return self.token_errors / self.tokens if self.tokens else 0.0

    @property
    def sequence_error_rate(self) -> float:
        return self.sequence_errors / self.sources if self.sources else 0.0


def nearest(hypothesis: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[int, Sequence[str]]:
    """The reference nearest to ``hypothesis`` and its edits (ties: the shorter, then the first listed)."""
    scored = [(editdistance.eval(list(hypothesis), list(ref)), len(ref), i) for i, ref in enumerate(references)]
    edits, _, i = min(scored)
    return edits, references[i]


def closest(hypothesis: Sequence[str], references: Sequence[Sequence[str]]) -> tuple[int, int]:
    """(edits, reference length) of the reference nearest to ``hypothesis``."""
    edits, ref = nearest(hypothesis, references)
    return edits, len(ref)


def error_rates(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> ErrorRates:
    """``hypotheses[i]`` scored against ``references[i]`` (every reference of source i)."""
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses for {len(references)} sources")
    tokens = errors = wrong = 0
    for hypothesis, refs in zip(hypotheses, references):
        edits, length = closest(hypothesis, refs)
        tokens, errors, wrong = tokens + length, errors + edits, wrong + (edits > 0)
    return ErrorRates(len(hypotheses), tokens, errors, wrong)
