"""Training: the one loop (``loop``) that runs a task, and the tasks (``lm``: the language model)."""

from seqlab.training.loop import Epoch, Result, Task, fingerprint, fit, pick_device

__all__ = ["Epoch", "Result", "Task", "fingerprint", "fit", "pick_device"]
