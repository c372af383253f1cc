"""Training: the one loop (``loop``) that runs a task, and the tasks (``lm``: the language model)."""

from seqlab.training.loop import Plan, Result, Round, Task, fingerprint, fit, pick_device

__all__ = ["Plan", "Result", "Round", "Task", "fingerprint", "fit", "pick_device"]
