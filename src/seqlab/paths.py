"""The files that pass between stages and that the command line reads by default, named once.

Every path is relative to the project root (where ``dvc.yaml`` is); ``dvc.yaml`` names the same ones
as each stage's deps and outs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable

PARAMS = "params.yaml"
PREPARED = "data/prepared"  # train/valid/test.txt, cleaned text
TOKENS = "data/tokens"  # <split>.txt (a sequence per line), <split>.stats.parquet, tokenizer.json
TOKENIZER = f"{TOKENS}/tokenizer.json"
VOCAB = "data/vocab"  # vocab.tsv, vocab.json
VALIDATION = "data/validation"
NGRAM = "models/ngram"  # <estimator>-<order>/: model.npz, model.arpa, scores.json
TUNE_BEST = "models/tune/best_config.json"
NEURAL = "models/neural"  # the tuned model: model.pt, scores.json
BASELINES = "models/baselines"  # <name>/: model.pt, scores.json
HYBRID = "models/hybrid"  # hybrid.json, scores.json
LEADERBOARD = "metrics/leaderboard.csv"
PAIRS = "data/seq2seq"  # the sequence-to-sequence task: <split>.tsv (source<TAB>target), source_vocab/, target_vocab/
SEQ2SEQ_TUNE_BEST = "models/seq2seq_tune/best_config.json"  # the encoder-decoder search's best configuration
SEQ2SEQ = "models/seq2seq"  # <name>/: model.pt, scores.json, test_hypotheses.tsv (name: attention or a baseline)
SEQ2SEQ_METRICS = "metrics/seq2seq/models"  # <name>.json: each encoder-decoder's figures
SEQ2SEQ_HISTORY = "metrics/seq2seq/history"  # <name>.csv: its valid loss by round
SEQ2SEQ_CURVES = "plots/seq2seq/curves"  # <name>.png: its learning curve
DEFAULT_MODEL = f"{NEURAL}/model.pt"  # what `seqlab predict` and `generate` read without --model


def ngram_folder(estimator: str, order: int) -> str:
    return f"{NGRAM}/{estimator}-{order}"


@dataclass(frozen=True)
class NeuralOutputs:
    """Where a neural model's stage writes: the tuned language model's (``train``), a baseline's, or an encoder-decoder's."""

    folder: str  # model.pt, scores.json
    checkpoints: str  # resume checkpoints while training
    metrics: str
    history: str
    curve: str


def neural_outputs(baseline: str | None = None) -> NeuralOutputs:
    if baseline is None:
        return NeuralOutputs(NEURAL, "checkpoints/train", "metrics/train.json", "metrics/train_history.csv", "plots/learning_curve.png")
    return NeuralOutputs(f"{BASELINES}/{baseline}", f"checkpoints/baselines/{baseline}", f"metrics/baselines/{baseline}.json",
                         f"metrics/baselines/{baseline}_history.csv", f"plots/baselines/{baseline}.png")


def seq2seq_outputs(name: str) -> NeuralOutputs:
    """Where the seq2seq stage writes the encoder-decoder ``name`` (attention, or a baseline)."""
    return NeuralOutputs(f"{SEQ2SEQ}/{name}", f"checkpoints/seq2seq/{name}", f"{SEQ2SEQ_METRICS}/{name}.json",
                         f"{SEQ2SEQ_HISTORY}/{name}.csv", f"{SEQ2SEQ_CURVES}/{name}.png")


def neural_folders(baselines: Iterable[str]) -> dict[str, str]:
    """Where the neural models are: ``tuned`` (the train stage) and each baseline, by name."""
    return {"tuned": NEURAL, **{name: neural_outputs(name).folder for name in baselines}}
