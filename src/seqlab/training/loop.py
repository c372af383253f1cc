"""The one trainer loop: Adam, gradient clipping, reduce-on-plateau, early stopping, the divergence
check, checkpoints and kill -9 resume, for any task.

What a task decides (``Task``): how an epoch's batches are cut, what state is carried from one batch
to the next, how a batch's loss is computed and what is scored on valid, and how the best model is
saved. The loop decides everything else. After every epoch the valid loss is computed; the best model
so far is saved, the learning rate is reduced on a plateau, and training stops after ``patience``
epochs without improvement.

Resuming: every ``checkpoint_every`` steps and at each epoch end the whole training state (weights,
optimizer, scheduler, random state, position in the epoch, the carried state, history) is written
atomically to ``workdir/last.pt``, beside the best model so far, ``workdir/best.pt``. A run started
with the same settings continues from there and ends with the same weights and metrics as one that
was never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Protocol

import torch
from torch import nn

from seqlab.config import TrainParams
from seqlab.errors import SeqLabError
from seqlab.io import atomic_path
from seqlab.models.neural_lm import autocast

State = dict[str, torch.Tensor] | None  # what a task carries between batches (None: nothing)


class Task(Protocol):
    """The task-specific part of training; ``prepare`` is called once, before the first step."""

    def prepare(self, cfg: TrainParams, device: torch.device) -> int:
        """Put the training data on ``device``; returns the number of steps in an epoch."""

    def tokens_per_epoch(self) -> int:
        """The target tokens an epoch trains on (the progress bar's total)."""

    def start_epoch(self, model: nn.Module, device: torch.device) -> State:
        """The state carried into an epoch's first batch."""

    def loss(self, model: nn.Module, step: int, state: State) -> tuple[torch.Tensor, State, int]:
        """The mean loss of batch ``step``, the state to carry on, and how many target tokens it had."""

    def detach(self, state: State) -> State:
        """``state`` cut from the graph (before it is saved)."""

    def valid_loss(self, model: nn.Module, cfg: TrainParams) -> float:
        """Mean negative log-likelihood per valid token: the evaluation's cross-entropy."""

    def save_best(self, path: Path, model: nn.Module, **extra: Any) -> None:
        """Write the model as the best so far (a weights-only checkpoint)."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SeqLabError("train.device is cuda, but no CUDA device is available")
    return torch.device(name)


def fingerprint(*parts) -> str:
    """Equal for runs that would train identically: configs, vocabulary and data."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class Epoch:
    epoch: int
    train_loss: float
    valid_loss: float
    valid_ppl: float
    lr: float
    tokens_per_s: float
    seconds: float


@dataclass
class Result:
    history: list[Epoch]
    best_epoch: int
    best_valid_loss: float
    stopped_early: bool
    resumed_from: str | None  # "epoch E step S" when the run continued an interrupted one

    @property
    def best_valid_ppl(self) -> float:
        return math.exp(self.best_valid_loss)


def _when(epoch: int, step: int) -> str:
    return f"epoch {epoch + 1} step {step}" if step else f"after epoch {epoch}"


def fit(
    model: nn.Module,
    task: Task,
    cfg: TrainParams,
    workdir: str | Path,
    run_fingerprint: str,
    on_epoch: Callable[[Epoch], None] = lambda epoch: None,
    progress: bool = True,
) -> Result:
    """Train ``model`` (built on CPU and seeded by the caller) on ``task``; its best weights end in
    ``workdir/best.pt``."""
    from tqdm.auto import tqdm

    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device)
    steps = task.prepare(cfg, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.lr_factor, patience=cfg.lr_patience)
    history: list[Epoch] = []
    best, bad_epochs, epoch, step, state = math.inf, 0, 0, 0, None
    resumed_from, stopped_early, running = None, False, (0, 0.0, 0)  # tokens, loss sum, loss count this epoch
    best_path, resume_path = Path(workdir) / "best.pt", Path(workdir) / "last.pt"
    saved_at: dict[Path, str] = {}  # the checkpoints this run can go back to, and when they were written
    if resume_path.exists():
        try:
            saved = torch.load(resume_path, map_location=device, weights_only=True)
        except Exception as err:  # a resume file from another version, or damaged: not worth stopping for
            print(f"{resume_path}: unreadable ({type(err).__name__}); starting afresh")
            saved = {}
        if saved.get("fingerprint") == run_fingerprint:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            torch.set_rng_state(saved["rng"].cpu())
            if device.type == "cuda" and "cuda_rng" in saved:
                torch.cuda.set_rng_state(saved["cuda_rng"].cpu())
            history = [Epoch(**e) for e in json.loads(saved["history"])]
            best, bad_epochs, epoch, step = saved["best"], saved["bad_epochs"], saved["epoch"], saved["step"]
            stopped_early, running = saved["stopped_early"], tuple(saved["running"])
            state = {k: v.to(device) for k, v in saved["state"].items()} if saved["state"] else None
            resumed_from = f"epoch {epoch + 1} step {step}"
            print(f"{resume_path}: resuming from {resumed_from}")
            saved_at[resume_path] = _when(epoch, step)
            if best_path.exists():
                saved_at[best_path] = f"best, epoch {min(history, key=lambda e: e.valid_loss).epoch}" if history else "best"
            for record in history:
                on_epoch(record)
        else:
            print(f"{resume_path}: left by a run with other settings or data; starting afresh")

    def save_resume() -> None:
        payload = {"fingerprint": run_fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                   "history": json.dumps([asdict(e) for e in history]), "best": best, "bad_epochs": bad_epochs,
                   "epoch": epoch, "step": step, "state": state or {}, "stopped_early": stopped_early,
                   "running": [tokens, loss_sum, loss_count] if step else [0, 0.0, 0]}
        if device.type == "cuda":
            payload["cuda_rng"] = torch.cuda.get_rng_state()
        with atomic_path(resume_path) as tmp:
            torch.save(payload, tmp)
        saved_at[resume_path] = _when(epoch, step)

    def diverged(what: str, epoch: int, step: int) -> None:
        kept = ", ".join(f"{path} ({when})" for path, when in saved_at.items()) or "none (none was written yet)"
        raise SeqLabError(
            f"training diverged: {what} at epoch {epoch + 1} step {step} (lr {optimizer.param_groups[0]['lr']:.3g}); "
            f"nothing saved after it, the last good checkpoints stay: {kept}; the same settings diverge again: lower the "
            "learning rate (params.yaml: train.lr, or the search's pick in models/tune/best_config.json) or train.clip")

    def check_weights(step: int) -> None:
        """Finite weights before anything is saved, so a checkpoint is always one to go back to."""
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                diverged(f"weight {name} is not finite", epoch, step)

    while epoch < cfg.epochs and not stopped_early:
        model.train()
        if step == 0:
            state = task.start_epoch(model, device)
        total = task.tokens_per_epoch()
        bar = tqdm(total=total, initial=round(total * step / steps), unit="tok", unit_scale=True,
                   desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False, dynamic_ncols=True)
        started, (tokens, loss_sum, loss_count) = time.perf_counter(), running
        resumed_tokens = tokens
        while step < steps:
            with autocast(device, cfg.amp):
                loss, state, count = task.loss(model, step, state)
            value = loss.item()
            if not math.isfinite(value):
                diverged(f"the training loss is {value}", epoch, step + 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            step += 1
            tokens += count
            loss_sum += value * count
            loss_count += count
            bar.update(count)
            if step % 10 == 0 or step == steps:
                mean = loss_sum / loss_count
                bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{math.exp(mean):.1f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")
            if step % cfg.checkpoint_every == 0 and step < steps:
                state = task.detach(state)
                check_weights(step)
                save_resume()
        bar.close()
        seconds = time.perf_counter() - started
        check_weights(step)
        loss_now = task.valid_loss(model, cfg)
        if not math.isfinite(loss_now):
            diverged(f"the valid loss is {loss_now}", epoch, step)
        speed = (tokens - resumed_tokens) / seconds if seconds else 0.0
        record = Epoch(epoch + 1, loss_sum / max(loss_count, 1), loss_now, math.exp(loss_now),
                       optimizer.param_groups[0]["lr"], speed, seconds)
        history.append(record)
        scheduler.step(loss_now)
        if loss_now < best:
            best, bad_epochs = loss_now, 0
            task.save_best(best_path, model, epoch=epoch + 1, valid_loss=loss_now)
            saved_at[best_path] = f"best, epoch {epoch + 1}"
        else:
            bad_epochs += 1
            stopped_early = bad_epochs >= cfg.patience
        if progress:
            print(f"epoch {record.epoch}: train loss {record.train_loss:.4f}, valid ppl {record.valid_ppl:.2f}, "
                  f"{record.tokens_per_s:,.0f} tokens/s, lr {record.lr:.3g}" + ("; stopping early" if stopped_early else ""))
        epoch, step, state, running = epoch + 1, 0, None, (0, 0.0, 0)
        save_resume()
        on_epoch(record)  # after the save: a caller may checkpoint workdir/last.pt here
    if best == math.inf:
        raise SeqLabError("training ran no epoch: nothing to save (train.epochs must be at least 1)")
    best_epoch = min(history, key=lambda e: e.valid_loss).epoch
    return Result(history, best_epoch, best, stopped_early, resumed_from)
