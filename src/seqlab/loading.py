"""The one loading path: any SeqLab model file, folder or MLflow URI, ready to score and predict.

A model is a file of the project (a neural ``model.pt``, an n-gram ``model.npz`` or ARPA file, a
hybrid's ``hybrid.json``), a folder holding one, or an MLflow model URI (``models:/seqlab-hybrid@champion``,
``models:/seqlab-lstm_attention/3``, ``runs:/<id>/model``), whose registered version carries its model
files, vocabulary and tokenizer among its artifacts. Files are checked against the vocabulary;
checkpoints are read with ``weights_only=True``, so loading never runs pickled code. torch is imported
only when a neural model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seqlab import paths
from seqlab.errors import SeqLabError
from seqlab.io import read_json
from seqlab.scoring import LanguageModel
from seqlab.tokenize import Tokenizer, load_tokenizer
from seqlab.vocab import BOS, Vocab, load_vocab

MODEL_FILES = ("hybrid.json", "model.pt", "model.npz", "model.arpa")  # what a model folder holds, first found wins
URI_SCHEMES = ("models:/", "runs:/")
DEFAULT_TOP_K = 10  # next tokens a served model lists when a request names no top_k


def open_model(path: str | Path, vocab: Vocab, batch_size: int | None = None, window: int | None = None,
               files: str | Path | None = None, device: str = "cpu") -> LanguageModel:
    """The model in ``path`` (a file, or a folder holding one of ``MODEL_FILES``), checked against
    ``vocab``; a hybrid's parts are found under ``files`` when given (a registered model's artifacts),
    else at their recorded paths. ``batch_size`` and ``window`` are how a neural model is scored; by
    default the settings its own stage scored it with (``scoring_settings``)."""
    path = Path(path)
    if path.is_dir():
        inside = [path / name for name in MODEL_FILES if (path / name).is_file()]
        if not inside:
            raise SeqLabError(f"{path}: no model file here (looked for {', '.join(MODEL_FILES)})")
        path = inside[0]
    if path.suffix == ".json":
        from seqlab.hybrid import Interpolated, load_spec

        parts = load_spec(path, files)
        return Interpolated([open_model(f, vocab, batch_size, window, device=device) for f, _ in parts], [w for _, w in parts])
    if path.suffix == ".pt":
        from seqlab.models.checkpoint import load_checkpoint
        from seqlab.models.neural_lm import NeuralLM

        own_batch_size, own_window = scoring_settings(path)
        return NeuralLM(load_checkpoint(path, vocab.sha256, device), batch_size or own_batch_size, window or own_window)
    if path.suffix == ".npz":
        from seqlab.ngram.model_file import load_model

        return load_model(path, vocab.sha256)
    from seqlab.ngram.arpa import read_arpa

    return read_arpa(path, vocab.index, vocab.index[BOS])


def scoring_settings(checkpoint: Path) -> tuple[int, int]:
    """(streams, window) a neural model was scored with by its stage, read from the ``scores.json``
    beside its checkpoint (a model folder, or a registered version's artifacts); (16, 128) without one.
    An LSTM's scores do not depend on them; the Transformer baseline's do, since each window recomputes
    its ``memory`` tokens of context, so prediction reads a context as its stage scored the test split."""
    from seqlab.config import TrainParams

    summary = checkpoint.parent / "scores.json"
    if summary.is_file():
        try:
            train = TrainParams.model_validate(read_json(summary)["train"])
        except (KeyError, TypeError, ValueError):
            raise SeqLabError(f"{summary}: no valid train settings beside {checkpoint.name}; rerun the stage that wrote it") from None
        return train.eval_batch_size, train.eval_window
    return 16, 128


@dataclass
class Loaded:
    """A model with the vocabulary and tokenizer it reads text with."""

    scorer: LanguageModel  # predicts: a neural model, an n-gram model or a hybrid
    vocab: Vocab
    tokenizer: Tokenizer

    @property
    def network(self) -> Any:
        """The torch module of a neural model (generation, attention); None for the other families."""
        return getattr(self.scorer, "network", None)


def load(model: str | Path, vocab_dir: str | Path = paths.VOCAB, tokenizer_path: str | Path = paths.TOKENIZER, device: str = "cpu",
         batch_size: int | None = None, window: int | None = None) -> Loaded:
    """A model file or folder with the project's vocabulary and tokenizer, or an MLflow URI with its own."""
    if str(model).startswith(URI_SCHEMES):
        return load_files(download(str(model)), str(model), device)
    vocab = load_vocab(vocab_dir)
    if not Path(tokenizer_path).is_file():
        raise SeqLabError(f"{tokenizer_path}: tokenizer not found (run `dvc repro tokenize`, or pass --tokenizer)")
    return Loaded(open_model(model, vocab, batch_size, window, device=device), vocab, load_tokenizer(tokenizer_path))


def load_files(root: str | Path, name: str, device: str = "cpu") -> Loaded:
    """A registered model's files as downloaded (pyfunc ``artifacts/``: the model file, ``vocab/``,
    ``tokenizer.json``, a hybrid's parts; ``extra_files/`` of versions registered in MLflow's PyTorch
    flavour before every family was a pyfunc); ``root`` may also be that folder itself."""
    root = Path(root)
    for files in (root / "artifacts", root / "extra_files", root):
        found = [files / f for f in MODEL_FILES if (files / f).is_file()]
        if found:
            break
    else:
        raise SeqLabError(f"{name}: not a SeqLab model (none of {', '.join(MODEL_FILES)} among its files)")
    vocab = load_vocab(files / "vocab" if (files / "vocab").is_dir() else files)
    if not (files / "tokenizer.json").is_file():
        raise SeqLabError(f"{name}: no tokenizer.json among its files (registered before models carried one; rerun its stage)")
    return Loaded(open_model(found[0], vocab, files=files, device=device), vocab, load_tokenizer(files / "tokenizer.json"))


def download(uri: str) -> Path:
    """The files of an MLflow model URI, fetched from this project's tracking store."""
    import mlflow

    from seqlab.tracking import connect

    connect()
    try:
        return Path(mlflow.artifacts.download_artifacts(artifact_uri=uri))
    except Exception as err:  # MlflowException and storage errors alike: one line for the user
        raise SeqLabError(f"{uri}: cannot fetch the model: {str(err).splitlines()[0][:200]}") from None
