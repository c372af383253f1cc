"""N-gram language models, in KenLM's steps: count, adjust counts, discount, estimate, write ARPA."""

from seqlab.ngram.counts import count, prune
from seqlab.scoring import Segments
from seqlab.ngram.estimate import BACKOFF_FORM, ESTIMATORS, NGramModel, estimate

__all__ = ["BACKOFF_FORM", "ESTIMATORS", "NGramModel", "Segments", "count", "estimate", "prune"]
