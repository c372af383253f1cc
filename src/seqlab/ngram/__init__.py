"""N-gram language models, in KenLM's steps: count, adjust counts, discount, estimate, write ARPA."""

from seqlab.ngram.counts import count, prune
from seqlab.ngram.estimate import BACKOFF_FORM, ESTIMATORS, NGramModel, estimate
from seqlab.scoring import Segments

__all__ = ["BACKOFF_FORM", "ESTIMATORS", "NGramModel", "Segments", "count", "estimate", "prune"]
