"""The trainer: continuous-stream batching, truncated BPTT, early stopping, checkpoints, resume.

The train split is one stream of token ids cut into ``batch_size`` contiguous rows; each step reads
the next ``bptt`` columns, and the model's state (recurrent state and attention cache) is carried to
the next window, detached. After every epoch the valid split is scored by the same function the
evaluation uses; the best model so far is saved, the learning rate is reduced on a plateau, and
training stops after ``patience`` epochs without improvement.

Resuming: every ``checkpoint_every`` steps and at each epoch end the whole training state (weights,
optimizer, scheduler, random state, position in the epoch, the carried model state, history) is
written atomically to ``workdir/last.pt``, beside the best model so far, ``workdir/best.pt``. A run
started with the same settings continues from there and ends with the same weights and metrics as
one that was never interrupted.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from seqlab.errors import SeqLabError
from seqlab.io import atomic_path
from seqlab.models.checkpoint import save_checkpoint
from seqlab.models.scoring import autocast, stream_log_probs


@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    bptt: int = 64
    epochs: int = 4
    lr: float = 2e-3
    clip: float = 0.25
    patience: int = 2  # epochs without a better valid loss before stopping
    lr_factor: float = 0.5  # reduce-on-plateau: multiply the learning rate by this ...
    lr_patience: int = 0  # ... after this many epochs without improvement
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA (ignored on CPU)
    eval_batch_size: int = 16
    checkpoint_every: int = 200  # steps between resume checkpoints

    @property
    def eval_window(self) -> int:
        """Tokens per scoring call; any value gives the same scores, since state carries across."""
        return max(self.bptt, 64)


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SeqLabError("train.device is cuda, but no CUDA device is available")
    return torch.device(name)


def batchify(ids: np.ndarray, batch_size: int) -> torch.Tensor:
    """(batch_size, length) contiguous rows of the stream; the remainder is dropped."""
    length = len(ids) // batch_size
    if length < 2:
        raise SeqLabError(f"the train split has {len(ids)} tokens: too few for batch_size {batch_size}")
    return torch.from_numpy(np.ascontiguousarray(ids[: batch_size * length]).reshape(batch_size, length).astype(np.int64))


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


def valid_loss(model: nn.Module, valid_ids: np.ndarray, scored: np.ndarray, cfg: TrainConfig) -> float:
    """Mean negative log-likelihood over the scored positions: the evaluation's cross-entropy."""
    log_probs = stream_log_probs(model, valid_ids, cfg.eval_batch_size, cfg.eval_window, cfg.amp)
    return float(-log_probs[scored].mean())


def _detach(state: dict) -> dict:
    return {k: v.detach() for k, v in state.items()}


def train(
    model: nn.Module,
    cfg: TrainConfig,
    train_ids: np.ndarray,
    valid_ids: np.ndarray,
    valid_scored: np.ndarray,
    workdir: str | Path,
    vocab_sha256: str,
    run_fingerprint: str,
    on_epoch: Callable[[Epoch], None] = lambda epoch: None,
    progress: bool = True,
) -> Result:
    """Train ``model`` (built on CPU and seeded by the caller); its best weights end in ``workdir/best.pt``."""
    from tqdm.auto import tqdm

    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    model.to(device)
    data = batchify(train_ids, cfg.batch_size).to(device)
    steps = (data.shape[1] - 1 + cfg.bptt - 1) // cfg.bptt  # windows per epoch
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
            saved_at[resume_path] = resumed_from if step else f"after epoch {epoch}"
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
        saved_at[resume_path] = f"epoch {epoch + 1} step {step}" if step else f"after epoch {epoch}"

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
            state = model.init_state(cfg.batch_size, device)
        bar = tqdm(total=(data.shape[1] - 1) * cfg.batch_size, initial=step * cfg.bptt * cfg.batch_size, unit="tok",
                   unit_scale=True, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress, leave=False, dynamic_ncols=True)
        started, (tokens, loss_sum, loss_count) = time.perf_counter(), running
        resumed_tokens = tokens
        while step < steps:
            x = data[:, step * cfg.bptt : (step + 1) * cfg.bptt]
            y = data[:, step * cfg.bptt + 1 : (step + 1) * cfg.bptt + 1]
            x = x[:, : y.shape[1]]
            with autocast(device, cfg.amp):
                features, state, _ = model(x, _detach(state))
                loss = -model.output.target_log_probs(features, y).mean()
            value = loss.item()
            if not math.isfinite(value):
                diverged(f"the training loss is {value}", epoch, step + 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            step += 1
            tokens += y.numel()
            loss_sum += value * y.numel()
            loss_count += y.numel()
            bar.update(y.numel())
            if step % 10 == 0 or step == steps:
                mean = loss_sum / loss_count
                bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{math.exp(mean):.1f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")
            if step % cfg.checkpoint_every == 0 and step < steps:
                state = _detach(state)
                check_weights(step)
                save_resume()
        bar.close()
        seconds = time.perf_counter() - started
        check_weights(step)
        loss_now = valid_loss(model, valid_ids, valid_scored, cfg)
        if not math.isfinite(loss_now):
            diverged(f"the valid loss is {loss_now}", epoch, step)
        speed = (tokens - resumed_tokens) / seconds if seconds else 0.0
        record = Epoch(epoch + 1, loss_sum / max(loss_count, 1), loss_now, math.exp(loss_now),
                       optimizer.param_groups[0]["lr"], speed, seconds)
        history.append(record)
        scheduler.step(loss_now)
        if loss_now < best:
            best, bad_epochs = loss_now, 0
            save_checkpoint(best_path, model, vocab_sha256, epoch=epoch + 1, valid_loss=loss_now)
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


def plot_learning_curve(history: list[Epoch], path: str | Path, title: str) -> None:
    """Train and valid loss per epoch, valid perplexity on the right axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    epochs = [e.epoch for e in history]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(epochs, [e.train_loss for e in history], marker="o", label="train loss")
    ax.plot(epochs, [e.valid_loss for e in history], marker="o", label="valid loss")
    ax.set_xlabel("epoch")
    ax.set_ylabel("cross-entropy (nats per token)")
    ax.set_xticks(epochs)
    ax.grid(True, alpha=0.3)
    best = min(history, key=lambda e: e.valid_loss)
    ax.plot([best.epoch], [best.valid_loss], marker="*", markersize=14, color="C1", linestyle="none",
            label=f"best: epoch {best.epoch}, valid ppl {best.valid_ppl:.1f}")
    ax.legend(loc="upper right")
    right = ax.twinx()  # the same scale read as perplexity: ppl = exp(nats)
    low, high = ax.get_ylim()
    right.set_ylim(math.exp(low), math.exp(high))
    right.set_yscale("log")
    right.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0)))
    right.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    right.yaxis.set_minor_formatter(NullFormatter())
    right.set_ylabel("perplexity")
    ax.set_title(f"{title}: learning curve")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
