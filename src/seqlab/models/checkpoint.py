"""Checkpoints: weights + architecture + vocabulary hash in one ``.pt`` file, written atomically.

Loading uses ``torch.load(weights_only=True)``: a checkpoint holds tensors and plain values only, so
loading never runs pickled code. A damaged file, a file of some other kind, or a checkpoint trained
on a different vocabulary is refused with one line naming the file.
"""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from seqlab.errors import SeqLabError
from seqlab.io import atomic_path
from seqlab.models import ModelConfig, Seq2SeqConfig, build, build_seq2seq

FORMAT = "seqlab-neural-lm/1"
SEQ2SEQ_FORMAT = "seqlab-seq2seq/1"


def save_checkpoint(path: str | Path, model: nn.Module, vocab_sha256: str, format: str = FORMAT, **extra) -> None:
    """A language model (``FORMAT``) or an encoder-decoder (``SEQ2SEQ_FORMAT``, whose ``vocab_sha256``
    identifies its pair of vocabularies) with its architecture."""
    payload = {"format": format, "config": model.config.as_dict(), "vocab_sha256": vocab_sha256,
               "state_dict": model.state_dict(), **extra}
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def read_checkpoint(path: str | Path, map_location="cpu", format: str = FORMAT) -> dict:
    """The checkpoint's contents, or a SeqLabError if the file is missing, damaged or not ours."""
    path = Path(path)
    if not path.is_file():
        raise SeqLabError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # damaged bytes can break the unpickler anywhere: KeyError, IndexError, ...
        text = str(err).split("WeightsUnpickler error:", 1)[-1]  # torch's advice before it (weights_only=False) is never passed on
        reason = next((line.strip() for line in text.splitlines() if line.strip()), type(err).__name__)
        if "weights_only" in reason:
            reason = type(err).__name__
        if not isinstance(err, (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile)):
            reason = f"{type(err).__name__}: {reason}"
        raise SeqLabError(f"{path}: not a readable checkpoint (corrupt or truncated?): {reason[:200]}") from None
    if not isinstance(payload, dict) or payload.get("format") != format:
        what = "sequence-to-sequence" if format == SEQ2SEQ_FORMAT else "neural"
        raise SeqLabError(f"{path}: not a SeqLab {what} model checkpoint")
    kinds = {"config": dict, "vocab_sha256": str, "state_dict": dict}
    damaged = [key for key, kind in kinds.items() if not isinstance(payload.get(key), kind)]
    if damaged:
        raise SeqLabError(f"{path}: damaged checkpoint: {', '.join(damaged)} missing or of the wrong kind")
    return payload


def load_checkpoint(path: str | Path, vocab_sha256: str | None, device: str | torch.device = "cpu",
                    format: str = FORMAT) -> nn.Module:
    """The model of a checkpoint in eval mode on ``device`` (a language model, or an encoder-decoder
    with ``SEQ2SEQ_FORMAT``); ``vocab_sha256`` (if given) must match."""
    payload = read_checkpoint(path, map_location=device, format=format)
    if vocab_sha256 is not None and payload["vocab_sha256"] != vocab_sha256:
        raise SeqLabError(f"{path}: trained with vocabulary {payload['vocab_sha256'][:12]}, "
                          f"but the vocabulary given is {vocab_sha256[:12]}; retrain or pass the matching --vocab")
    try:
        if format == SEQ2SEQ_FORMAT:
            model = build_seq2seq(Seq2SeqConfig.from_dict(payload["config"]))
        else:
            model = build(ModelConfig.from_dict(payload["config"]))
        model.load_state_dict(payload["state_dict"])
    except Exception as err:  # TypeError, KeyError, RuntimeError, ...: a config or weights that do not fit
        reason = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SeqLabError(f"{path}: checkpoint does not match its architecture: {reason[:200]}") from None
    return model.to(device).eval()
