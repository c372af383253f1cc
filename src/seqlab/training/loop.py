"""The one trainer loop: Adam, gradient clipping, a learning-rate schedule, early stopping, the
divergence check, checkpoints and kill -9 resume, for any task.

The budget is counted in tokens, so it means the same on any corpus: ``train.tokens`` target tokens
are seen in all (the train split is read again from its start as often as that takes), and every
``train.eval_every`` tokens a *round* ends: the valid loss is computed, the best model so far is
saved, and training stops after ``patience`` rounds without improvement. The learning rate follows a
cosine from ``train.lr`` to zero over the budget (``schedule: cosine``), or is reduced on a plateau of
the valid loss (``schedule: plateau``).

What a task decides (``Task``): how a pass over its data is cut into batches, what state is carried
from one batch to the next, how a batch's loss is computed and what is scored on valid, and how the
best model is saved. The loop decides everything else.

Resuming: every ``checkpoint_every`` steps and at each round's end the whole training state (weights,
optimizer, schedule, random state, the step, the carried state, history) is written atomically to
``workdir/last.pt``, beside the best model so far, ``workdir/best.pt``. A run started with the same
settings continues from there and ends with the same weights and metrics as one that was never
interrupted.

Data-parallel (``train.workers`` > 1, started by ``seqlab.ray_train``): inside a ``torch.distributed``
process group each worker takes its share of the batch (the task's ``prepare`` cuts it), the task's
loss runs under DistributedDataParallel, whose averaged gradients equal those of the whole batch, and
the loop keeps every worker in step: the loss and token counts summed over the workers every step,
the valid loss computed by worker 0 and sent to all, the resume checkpoint written by worker 0 with
every worker's random and carried state, and read back by worker 0 and sent to all.
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
import torch.distributed as dist
from torch import nn

from seqlab.config import LoopParams
from seqlab.errors import SeqLabError
from seqlab.io import atomic_path
from seqlab.models.neural_lm import autocast

State = dict[str, torch.Tensor] | None  # what a task carries between batches (None: nothing)


class Task(Protocol):
    """The task-specific part of training; ``prepare`` is called once, before the first step."""

    def prepare(self, cfg: LoopParams, device: torch.device) -> int:
        """Put the training data on ``device``; returns the number of steps in a pass over it."""

    def tokens_per_step(self, cfg: LoopParams) -> int:
        """The target tokens of a full batch: how the token budget becomes steps."""

    def start_pass(self, model: nn.Module, device: torch.device) -> State:
        """The state carried into a pass's first batch."""

    def loss(self, model: nn.Module, step: int, state: State) -> tuple[torch.Tensor, State, int]:
        """The mean loss of batch ``step`` of a pass, the state to carry on, and how many target tokens it had."""

    def detach(self, state: State) -> State:
        """``state`` cut from the graph (before it is saved)."""

    def valid_loss(self, model: nn.Module, cfg: LoopParams) -> float:
        """Mean negative log-likelihood per valid token: the evaluation's cross-entropy."""

    def save_best(self, path: Path, model: nn.Module, **extra: Any) -> None:
        """Write the model as the best so far (a weights-only checkpoint)."""


def pick_device(name: str) -> torch.device:
    """The device ``train.device`` names: a CUDA device is the current one (a data-parallel worker's own)."""
    if name == "cuda" and not torch.cuda.is_available():
        raise SeqLabError("train.device is cuda, but no CUDA device is available")
    if name in ("auto", "cuda") and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def group() -> tuple[int, int]:
    """This worker's rank and the number of workers: (0, 1) outside a data-parallel process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _Batch(nn.Module):
    """A task's loss as a module's forward, so that DistributedDataParallel sees every step's forward."""

    def __init__(self, model: nn.Module, task: Task):
        super().__init__()
        self.model, self.task = model, task

    def forward(self, step: int, state: State) -> tuple[torch.Tensor, State, int]:
        return self.task.loss(self.model, step, state)


def _sum(values: list[float], device: torch.device) -> list[float]:
    """``values`` summed over the workers."""
    total = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def _from_first(value, device: torch.device):
    """Worker 0's ``value`` (any picklable object), on every worker."""
    box = [value]
    dist.broadcast_object_list(box, src=0, device=device if device.type == "cuda" else None)
    return box[0]


def fingerprint(*parts) -> str:
    """Equal for runs that would train identically: configs, vocabulary and data."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def perplexity(loss: float) -> float:
    """exp(loss), infinite past what a float holds (a loss above 709.78, as a model blowing up gives)."""
    return math.exp(loss) if loss < 709.78 else math.inf


@dataclass
class Round:
    round: int  # 1, 2, ...: a valid evaluation every train.eval_every tokens
    steps: int  # optimiser steps so far ...
    tokens: int  # ... and target tokens seen so far
    train_loss: float
    valid_loss: float
    valid_ppl: float
    lr: float
    tokens_per_s: float
    seconds: float


@dataclass
class Result:
    history: list[Round]
    best_round: int
    best_valid_loss: float
    stopped_early: bool
    resumed_from: str | None  # "step S" when the run continued an interrupted one

    @property
    def best_valid_ppl(self) -> float:
        return perplexity(self.best_valid_loss)


@dataclass(frozen=True)
class Plan:
    """The token budget in steps: ``total`` optimiser steps in ``rounds`` rounds of ``per_round``
    (the last takes what is left)."""

    total: int
    per_round: int
    rounds: int

    @classmethod
    def of(cls, cfg: LoopParams, tokens_per_step: int) -> "Plan":
        total = max(1, round(cfg.tokens / tokens_per_step))
        per_round = min(total, max(1, round(cfg.eval_every / tokens_per_step)))
        rounds = min(-(-cfg.tokens // cfg.eval_every), -(-total // per_round))
        return cls(total, per_round, rounds)

    def round_of(self, step: int) -> int:
        """The 0-based round that step ``step`` (0-based) belongs to."""
        return min(step // self.per_round, self.rounds - 1)

    def end_of(self, round_index: int) -> int:
        """The step count at which round ``round_index`` (0-based) closes."""
        return self.total if round_index == self.rounds - 1 else (round_index + 1) * self.per_round


def adam(model: nn.Module, lr: float) -> torch.optim.Adam:
    """Adam with the fused kernel (one pass over all parameters; on 2 CPU cores about 6x faster per
    step than the loop over tensors, the same updates to rounding)."""
    return torch.optim.Adam(model.parameters(), lr=lr, fused=True)


def schedule(optimizer: torch.optim.Optimizer, cfg: LoopParams, plan: Plan):
    """The learning-rate schedule: a cosine over the budget (stepped every step) or reduce-on-plateau
    (stepped with every round's valid loss)."""
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, plan.total) / plan.total)))
    return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=cfg.lr_factor, patience=cfg.lr_patience)


def fit(
    model: nn.Module,
    task: Task,
    cfg: LoopParams,
    workdir: str | Path,
    run_fingerprint: str,
    on_round: Callable[[Round], None] = lambda record: None,
    progress: bool = True,
    label: str = "",
    bars: bool = True,
) -> Result:
    """Train ``model`` (built on CPU and seeded by the caller) on ``task``; its best weights end in
    ``workdir/best.pt``. ``progress``: a line after each round (which ``label``, when given,
    starts: the model's name, where several train at once), and a bar during it unless ``bars`` is false."""
    from tqdm.auto import tqdm

    device = pick_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    rank, workers = group()
    progress = progress and rank == 0
    prefix = f"{label} " if label else ""
    model.to(device)
    per_pass = task.prepare(cfg, device)
    batch = _Batch(model, task)
    if workers > 1:
        from torch.nn.parallel import DistributedDataParallel

        # broadcasts worker 0's weights; its backward averages the gradients over the workers
        batch = DistributedDataParallel(batch, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
                                        find_unused_parameters=True)  # an adaptive softmax's tail clusters sit out batches without their words
    plan = Plan.of(cfg, task.tokens_per_step(cfg))
    optimizer = adam(model, cfg.lr)
    scheduler = schedule(optimizer, cfg, plan)
    history: list[Round] = []
    best, bad_rounds, step, tokens, state = math.inf, 0, 0, 0, None
    resumed_from, stopped_early, running = None, False, (0.0, 0)  # loss sum, loss count this round
    best_path, resume_path = Path(workdir) / "best.pt", Path(workdir) / "last.pt"
    saved_at: dict[Path, str] = {}  # the checkpoints this run can go back to, and when they were written
    saved = None  # what worker 0 read from resume_path, sent to every worker
    if rank == 0 and resume_path.exists():
        try:
            saved = torch.load(resume_path, map_location="cpu", weights_only=True)
        except Exception as err:  # a resume file from another version, or damaged: not worth stopping for
            print(f"{resume_path}: unreadable ({type(err).__name__}); starting afresh")
            saved = {}
    if workers > 1:
        saved = _from_first(saved, device)
    if saved is not None:
        if saved.get("fingerprint") == run_fingerprint:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            own = saved["workers"][rank - 1] if rank else saved  # a worker's random and carried state
            torch.set_rng_state(own["rng"].cpu())
            if device.type == "cuda" and "cuda_rng" in own:
                torch.cuda.set_rng_state(own["cuda_rng"].cpu())
            history = [Round(**r) for r in json.loads(saved["history"])]
            best, bad_rounds, step, tokens = saved["best"], saved["bad_rounds"], saved["step"], saved["tokens"]
            stopped_early, running = saved["stopped_early"], tuple(saved["running"])
            state = {k: v.to(device) for k, v in own["state"].items()} if own["state"] else None
            resumed_from = f"step {step}"
            if rank == 0:
                print(f"{resume_path}: resuming from {resumed_from} of {plan.total}")
            saved_at[resume_path] = f"step {step}"
            if best_path.exists():
                saved_at[best_path] = f"best, round {min(history, key=lambda r: r.valid_loss).round}" if history else "best"
            for record in history:
                on_round(record)
        elif rank == 0:
            print(f"{resume_path}: left by a run with other settings or data; starting afresh")

    def save_resume() -> None:
        own = {"rng": torch.get_rng_state(), "state": {k: v.cpu() for k, v in (state or {}).items()}}
        if device.type == "cuda":
            own["cuda_rng"] = torch.cuda.get_rng_state()
        if workers > 1:  # every worker's own part, to worker 0
            parts = [None] * workers if rank == 0 else None
            dist.gather_object(own, parts, dst=0)
        if rank:
            return
        payload = {"fingerprint": run_fingerprint, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                   "scheduler": scheduler.state_dict(), **own,
                   "history": json.dumps([asdict(r) for r in history]), "best": best, "bad_rounds": bad_rounds,
                   "step": step, "tokens": tokens, "stopped_early": stopped_early, "running": list(running)}
        if workers > 1:
            payload["workers"] = parts[1:]
        with atomic_path(resume_path) as tmp:
            torch.save(payload, tmp)
        saved_at[resume_path] = f"step {step}"

    def diverged(what: str, step: int) -> None:
        kept = ", ".join(f"{path} ({when})" for path, when in saved_at.items()) or "none (none was written yet)"
        raise SeqLabError(
            f"training diverged: {what} at step {step} of {plan.total} (lr {optimizer.param_groups[0]['lr']:.3g}); "
            f"nothing saved after it, the last good checkpoints stay: {kept}; the same settings diverge again: lower the "
            "learning rate (params.yaml: train.lr, or the search's pick in models/tune/best_config.json) or train.clip")

    def check_weights(step: int) -> None:
        """Finite weights before anything is saved, so a checkpoint is always one to go back to."""
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                diverged(f"weight {name} is not finite", step)

    while step < plan.total and not stopped_early:
        model.train()
        index = plan.round_of(step)
        end = plan.end_of(index)
        bar = tqdm(total=end - index * plan.per_round, initial=step - index * plan.per_round, unit="step",
                   desc=f"{prefix}round {index + 1}/{plan.rounds}", disable=not (progress and bars), leave=False, dynamic_ncols=True)
        started, round_tokens, (loss_sum, loss_count) = time.perf_counter(), 0, running
        while step < end:
            if step % per_pass == 0 or state is None:  # a pass over the data starts: nothing to carry
                state = task.start_pass(model, device)
            with autocast(device, cfg.amp):
                loss, state, count = batch(step % per_pass, state)
            value = loss.item()
            if workers > 1:  # the whole batch's mean loss and target tokens
                loss_total, count = _sum([value * count, count], device)
                value, count = loss_total / count, int(count)
            if not math.isfinite(value):
                diverged(f"the training loss is {value}", step + 1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.clip)
            optimizer.step()
            if cfg.schedule == "cosine":
                scheduler.step()
            step += 1
            tokens += count
            round_tokens += count
            loss_sum += value * count
            loss_count += count
            running = (loss_sum, loss_count)
            bar.update(1)
            if step % 10 == 0 or step == end:
                mean = loss_sum / loss_count
                bar.set_postfix(loss=f"{mean:.3f}", ppl=f"{perplexity(mean):.1f}", lr=f"{optimizer.param_groups[0]['lr']:.2g}")
            if step % cfg.checkpoint_every == 0 and step < end:
                state = task.detach(state)
                check_weights(step)
                save_resume()
        bar.close()
        seconds = time.perf_counter() - started
        check_weights(step)
        loss_now = task.valid_loss(model, cfg) if rank == 0 else None
        if workers > 1:
            loss_now = _from_first(loss_now, device)
        if not math.isfinite(loss_now):
            diverged(f"the valid loss is {loss_now}", step)
        record = Round(index + 1, step, tokens, loss_sum / max(loss_count, 1), loss_now, perplexity(loss_now),
                       optimizer.param_groups[0]["lr"], round_tokens / seconds if seconds else 0.0, seconds)
        history.append(record)
        if cfg.schedule == "plateau":
            scheduler.step(loss_now)
        if loss_now < best:
            best, bad_rounds = loss_now, 0
            if rank == 0:
                task.save_best(best_path, model, round=record.round, valid_loss=loss_now)
            saved_at[best_path] = f"best, round {record.round}"
        else:
            bad_rounds += 1
            stopped_early = bad_rounds >= cfg.patience
        if progress:
            print(f"{prefix}round {record.round}/{plan.rounds} ({record.tokens:,} tokens): train loss {record.train_loss:.4f}, "
                  f"valid ppl {record.valid_ppl:.2f}, {record.tokens_per_s:,.0f} tokens/s, lr {record.lr:.3g}"
                  + ("; stopping early" if stopped_early else ""))
        running = (0.0, 0)
        state = task.detach(state) if state is not None else None
        save_resume()
        on_round(record)  # after the save: a caller may checkpoint workdir/last.pt here
    best_round = min(history, key=lambda r: r.valid_loss).round
    return Result(history, best_round, best, stopped_early, resumed_from)
