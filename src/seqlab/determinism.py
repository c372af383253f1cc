"""The same bits from torch's CPU math whatever else runs on the machine: ``fix_threads()``.

Why: a float sum's result depends on how it is split among threads. On the CPU, torch (2.13, OpenMP
build with MKL and oneDNN) splits large reductions (``sum``, ``mean``, the layer norm's backward, MKL's
``dot``) into one chunk per thread, so a run with 1 intra-op thread and one with 2 give different
bits, and over epochs of training a different perplexity. The thread count must therefore not depend
on the machine's load, nor on anything else that differs between two runs of the same configuration:

- OpenMP's dynamic adjustment (``OMP_DYNAMIC=TRUE``, or ``omp_set_dynamic(1)``): GNU libgomp then
  sizes each parallel team as the cores minus the 15-minute load average, and kernels that count on
  the full team (oneDNN's LSTM) then give different numbers, not just differently rounded ones. It is
  off by default, but an inherited ``OMP_DYNAMIC=TRUE`` turns it on, libgomp reads it when torch
  loads it, and ``torch.set_num_threads`` leaves it as it is.
- MKL's dynamic threading (``MKL_DYNAMIC``, on by default): MKL may use fewer threads than asked.
  No load dependence of it was measured, but ``torch.set_num_threads`` turns it off anyway (it
  calls ``mkl_set_dynamic(0)``; nothing else in torch does).
- The default thread count itself: torch takes it from ``OMP_NUM_THREADS`` or from the cores the
  process may use (a ``taskset``, a container's cpuset), fixed once the process has started.

``fix_threads`` sets the intra-op thread count (by default torch's default, so a run on an idle
machine gives the bits it gave before), turns both kinds of dynamic threading off, and, on a machine
without CUDA, switches PyTorch's deterministic algorithms on (they change no CPU result of SeqLab's
models; on CUDA they would change today's results, so there they are left off).

Where it is called: at the start of the stages that train or score (``pipelines/train.py``,
``pipelines/hybrid.py``), by every ``NeuralLM`` (so ``seqlab score``, ``seqlab predict`` and a served
version too), and in a Ray trial's training thread with the trial's CPUs: OpenMP's thread count
and dynamic setting are per thread. Called before ``import torch`` it also keeps an inherited
``OMP_DYNAMIC=TRUE`` away from every thread; it sets ``OMP_DYNAMIC``/``MKL_DYNAMIC`` to FALSE in
``os.environ`` for child processes too. It is idempotent and cheap: another call in the same thread
with the same count compares two numbers (about 2 microseconds).

The inter-op pool (``torch.set_num_interop_threads``) is left alone: it only runs independent ops
side by side (``torch.jit.fork``), each with the intra-op count set here, so it changes no result.
"""

from __future__ import annotations

import ctypes
import os
import threading

# read by the OpenMP runtime when it is loaded (with torch) and by MKL, here and in child processes
ENVIRONMENT = {"OMP_DYNAMIC": "FALSE", "MKL_DYNAMIC": "FALSE"}
_OPENMP_NAMES = ("libgomp", "libiomp", "libomp")

_lock = threading.Lock()
_default: int | None = None  # torch's intra-op thread count at the first call
_set_dynamic: list | None = None  # omp_set_dynamic of each loaded OpenMP runtime
_applied = threading.local()  # .threads: the count applied in this thread


def fix_threads(threads: int | None = None) -> int:
    """Make torch's CPU results independent of the machine's load; returns the intra-op thread count.

    ``threads``: the intra-op thread count; by default torch's default at the first call in this
    process (the number of cores it may use, or ``OMP_NUM_THREADS``), so an idle run keeps its bits.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise ValueError(f"fix_threads: threads must be a positive integer, got {threads!r}")
    os.environ.update(ENVIRONMENT)  # before torch is imported this is all OpenMP needs, for every thread

    import torch

    global _default
    with _lock:
        if _default is None:
            _default = torch.get_num_threads()
        count = _default if threads is None else threads
    if getattr(_applied, "threads", None) == count and torch.get_num_threads() == count:
        return count
    # omp_set_num_threads and mkl_set_num_threads_local for this thread, the count for threads torch
    # starts later, and mkl_set_dynamic(0)
    torch.set_num_threads(count)
    for set_dynamic in _openmp_set_dynamic():
        set_dynamic(0)  # this thread's dyn-var: OMP_DYNAMIC=TRUE may have been read when torch was loaded
    flush_denormals(count)
    with _lock:
        if not torch.are_deterministic_algorithms_enabled() and not torch.cuda.is_available():
            torch.use_deterministic_algorithms(True, warn_only=True)
    _applied.threads = count
    return count


def flush_denormals(threads: int) -> None:
    """Denormal floats flushed to zero in this thread and in each of the ``threads`` OpenMP threads.

    Arithmetic on denormals (below 1.2e-38 in float32) is tens of times slower on x86. A trained
    network makes them (softmax tails, small gradients): the Transformer baseline trained at 12.5k
    tokens/s when fresh and 8.9k when trained, 12.8k with denormals flushed. The setting is per thread
    (MXCSR) and a thread inherits it only when created, so it is set inside an OpenMP parallel region
    of ``threads`` threads, one call in each: the same bits whichever thread computes a piece."""
    import torch

    torch.set_flush_denormal(True)
    parallel = _gomp_parallel()
    if parallel is not None:
        parallel(_PARALLEL_BODY(lambda _: torch.set_flush_denormal(True) and None), None, threads, 0)


_PARALLEL_BODY = ctypes.CFUNCTYPE(None, ctypes.c_void_p)
_parallel: list | None = None


def _gomp_parallel():
    """GOMP_parallel of torch's OpenMP runtime, found once; None where it is not libgomp."""
    global _parallel
    with _lock:
        if _parallel is None:
            _parallel = [None]
            for library in _loaded_openmp():
                try:
                    function = ctypes.CDLL(library, mode=getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 1)).GOMP_parallel
                except (OSError, AttributeError):
                    continue
                function.argtypes, function.restype = [_PARALLEL_BODY, ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint], None
                _parallel = [function]
                break
        return _parallel[0]


def _openmp_set_dynamic() -> list:
    """``omp_set_dynamic`` of every OpenMP runtime loaded in this process (torch's libgomp), found once."""
    global _set_dynamic
    with _lock:
        if _set_dynamic is None:
            found, seen = [], set()
            for library in _loaded_openmp():
                try:
                    handle = ctypes.CDLL(library, mode=getattr(os, "RTLD_NOLOAD", 0) | getattr(os, "RTLD_LAZY", 1))
                    function = handle.omp_set_dynamic
                except (OSError, AttributeError):
                    continue
                address = ctypes.cast(function, ctypes.c_void_p).value
                if address not in seen:
                    seen.add(address)
                    function.argtypes, function.restype = [ctypes.c_int], None
                    found.append(function)
            _set_dynamic = found
        return _set_dynamic


def _loaded_openmp() -> list[str]:
    """Paths of the OpenMP runtimes mapped into this process; on systems without /proc, the global namespace."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            paths = {line.split(None, 5)[-1].strip() for line in maps if "/" in line}
    except OSError:
        return [None]  # type: ignore[list-item]  # ctypes.CDLL(None): symbols already loaded globally
    return sorted(p for p in paths if os.path.basename(p).startswith(_OPENMP_NAMES) and ".so" in os.path.basename(p))
