"""N-gram language models, in KenLM's steps: count, adjust counts, discount, estimate, write ARPA."""

from seqlab.ngram.counts import Segments, count, prune
from seqlab.ngram.estimate import BACKOFF_FORM, ESTIMATORS, NGramModel, estimate

__all__ = ["BACKOFF_FORM", "ESTIMATORS", "NGramModel", "Segments", "count", "estimate", "prune"]
