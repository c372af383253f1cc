"""SeqLab: a reproducible language-modeling lab."""

__version__ = "0.1.0"
