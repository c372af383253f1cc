"""Work on a few threads, handed back in order: numpy's sorts and ufuncs and Arrow's kernels let go of
the GIL, so threads share the cores without copies between processes."""

from __future__ import annotations

import os
from collections import deque
from concurrent.futures import ThreadPoolExecutor


def cores() -> int:
    """The CPUs this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def in_order(pool: ThreadPoolExecutor, work, items, ahead: int):
    """``work`` of each item, run in ``pool`` at most ``ahead`` items ahead, yielded in the items' order."""
    pending: deque = deque()
    for item in items:
        pending.append(pool.submit(work, item))
        if len(pending) > ahead:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()
