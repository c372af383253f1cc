"""Jobs side by side, each in a process of its own with a share of the cores.

The encoder-decoders of the seq2seq stage are small: a step is many small matrix products, so a
second thread adds little, while two models trained at once on 2 cores, one thread each, get about
1.5 times the tokens per second of one model on both (``bench/g2p_bench.py side-by-side``).
``plan`` splits the cores; ``side_by_side`` runs the jobs.

A job's thread count is part of its result (a float sum split among more threads rounds
differently), so it depends only on the cores and the number of jobs, never on the load.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import signal
import sys
import threading
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from typing import Callable, Literal, Sequence, TypeVar

T = TypeVar("T")


def plan(jobs: int, processes: int | Literal["auto"], cores: int) -> tuple[int, int]:
    """(processes, threads for each): ``auto`` runs as many jobs at once as there are cores, at most
    all of them; the cores are shared out evenly, at least one thread each."""
    count = min(jobs, cores) if processes == "auto" else min(jobs, processes)
    count = max(count, 1)
    return count, max(1, cores // count)


def side_by_side(function: Callable[..., T], jobs: Sequence[tuple], processes: int, desc: str = "", unit: str = "tokens") -> list[T]:
    """``function(*job)`` for every job, their results in the jobs' order.

    With one process, here and one after another. Otherwise in ``processes`` spawned processes (a
    new interpreter each: nothing of this one's torch or tracking state carries over), which die with
    this one. A worker's printed lines come here and are printed above one progress bar of all the
    jobs (``desc``; each job moves it with ``report``, in ``unit``). The first job to fail stops the others
    (each gets a KeyboardInterrupt, so its own clean-up runs) and its error is raised here.
    """
    if processes <= 1:
        return [function(*job) for job in jobs]
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    shown: list = []  # the bar, once a job reports
    reader = threading.Thread(target=_show, args=(messages, desc, unit, shown), daemon=True)
    reader.start()
    try:
        with ProcessPoolExecutor(processes, mp_context=context, initializer=_start, initargs=(os.getpid(), messages)) as pool:
            futures = [pool.submit(function, *job) for job in jobs]
            done, running = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f in done and f.exception() is not None), None)
            if failed is not None:
                for future in running:
                    future.cancel()
                for child in multiprocessing.active_children():
                    os.kill(child.pid, signal.SIGINT)
                wait(running)
                raise failed.exception()
            return [future.result() for future in futures]
    finally:
        messages.put(None)
        reader.join(timeout=10)
        for bar in shown:
            bar.close()


def report(job: str, done: float, total: float) -> None:
    """In a worker of ``side_by_side``: ``job`` has done ``done`` of its ``total`` (its share of the
    bar); elsewhere nothing."""
    if _messages is not None:
        _messages.put(("progress", job, done, total))


_messages = None  # in a worker: the queue to the process that started it


def _show(messages, desc: str, unit: str, shown: list) -> None:
    """The starting process's side: the workers' lines printed (above the bar, once there is one),
    their progress in the bar, made at the first report."""
    from tqdm.auto import tqdm

    progress: dict[str, tuple[float, float]] = {}
    while (message := messages.get()) is not None:
        if message[0] == "line":
            tqdm.write(message[1])
            continue
        if not shown:
            shown.append(tqdm(total=0, unit=unit, unit_scale=True, desc=desc, dynamic_ncols=True))
        progress[message[1]] = message[2:]
        shown[0].total = sum(total for _, total in progress.values())
        shown[0].n = sum(done for done, _ in progress.values())
        shown[0].refresh()


class _Lines(io.TextIOBase):
    """A worker's stdout: each whole line sent to the starting process."""

    def __init__(self, messages):
        self.messages, self.pending = messages, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            self.messages.put(("line", line))
        return len(text)

    def flush(self) -> None:
        if self.pending:
            self.messages.put(("line", self.pending))
            self.pending = ""


def _start(parent: int, messages) -> None:
    """A worker's start: its stdout lines sent to ``parent`` (printed there above the bar), and on
    Linux the kernel told to kill it when ``parent`` dies (a ``kill -9`` of the stage must not
    leave it training on, writing the checkpoints the next run resumes from)."""
    global _messages
    _messages = messages
    sys.stdout = _Lines(messages)
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)
