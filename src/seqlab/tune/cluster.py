"""The Ray side of a search: a local instance or an existing cluster, and what a trial may use."""

from __future__ import annotations

import os
from pathlib import Path

from seqlab.errors import SeqLabError
from seqlab.net import unreachable


def connect(address: str | None, section: str = "tune") -> str:
    """Start a local Ray instance, or join the cluster at ``address`` (``<section>.address``, else
    ``RAY_ADDRESS``); fail within seconds when it cannot be reached. Returns a description.

    Trial output stays in the workers' logs: the driver prints one line per trial instead, and a
    failed trial's error is in its row of the trials table.
    """
    import logging

    import ray

    source = f"params.yaml: {section}.address"
    if address is None and os.environ.get("RAY_ADDRESS"):
        address, source = os.environ["RAY_ADDRESS"], "RAY_ADDRESS"
    if address in (None, "local"):
        os.environ.pop("RAY_ADDRESS", None)  # an empty or "local" RAY_ADDRESS means a new local instance too
        ray.init(address="local", include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
        return "a local Ray instance"
    if address != "auto":
        _probe(address, source)
    import seqlab

    runtime_env = {"py_modules": [str(Path(seqlab.__file__).parent)]}  # workers import the driver's seqlab
    try:
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False, runtime_env=runtime_env)
    except Exception as err:  # ConnectionError, RuntimeError, ...: whatever ray raises, one line
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SeqLabError(f"{source}: cannot connect to the Ray cluster at {address}: {first}") from None
    return f"the Ray cluster at {address}"


def _probe(address: str, source: str, timeout: float = 5.0) -> None:
    """A TCP connection to the cluster's head, so an unreachable address fails in seconds, not minutes."""
    target = address.removeprefix("ray://")
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        raise SeqLabError(f"{source}: {address!r} is not host:port, ray://host:port, auto or local")
    reason = unreachable(host, int(port), timeout)
    if reason:
        raise SeqLabError(f"{source}: cannot reach the Ray cluster at {address} ({reason}); "
                          f"start one with `ray start --head` or unset it for a local instance")


def trial_resources(cpus: float, gpus: float, gpu_fallback: bool, section: str = "tune") -> dict[str, float]:
    """Resources per trial that the connected cluster can give, or a one-line error naming
    ``section``'s key (``tune`` or ``seq2seq_tune``)."""
    import ray

    total = ray.cluster_resources()
    have_cpus, have_gpus = total.get("CPU", 0), total.get("GPU", 0)
    if gpus > 0 and have_gpus == 0:
        if not gpu_fallback:
            raise SeqLabError(f"params.yaml: {section}.gpus_per_trial: trials ask for {gpus:g} GPU, but the Ray cluster has none "
                              f"({section}.gpu_fallback: true runs them on CPUs)")
        print(f"{section}: no GPU in the Ray cluster; trials run on CPUs ({section}.gpu_fallback)")
        gpus = 0.0
    elif gpus > have_gpus:
        raise SeqLabError(f"params.yaml: {section}.gpus_per_trial: trials ask for {gpus:g} GPUs, but the Ray cluster has {have_gpus:g}")
    if cpus > have_cpus:
        raise SeqLabError(f"params.yaml: {section}.cpus_per_trial: trials ask for {cpus:g} CPUs, but the Ray cluster has {have_cpus:g}")
    return {"cpu": cpus, "gpu": gpus}


def error_line(err: BaseException) -> str:
    """The most telling line of a failure on Ray (a task's, a Ray Train worker's): the worker's own
    ``SeqLabError`` message if there is one, else the last line of the error, without Ray's advice."""
    seen, found = set(), None
    stack = [err]
    while stack:
        current = stack.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        cause = getattr(current, "cause", None)  # a RayTaskError's own exception (the error is also an instance of its class)
        if isinstance(cause, BaseException):
            stack.append(cause)
        elif isinstance(current, SeqLabError):
            return str(current)
        found = found or current
        stack += [e for e in (current.__cause__, current.__context__) if e is not None]
        stack += [e for e in getattr(current, "worker_failures", {}).values() if isinstance(e, BaseException)]
    text = str(found or err).strip()
    lines = [line for line in text.splitlines() if line.strip()]
    line = lines[-1] if lines else type(err).__name__
    return line[: line.index(". ") + 1] if len(line) > 160 and ". " in line else line  # Ray's advice after the first sentence
