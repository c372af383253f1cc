"""The one user-facing error type, and the guard that turns it into one line and an exit code."""

from __future__ import annotations

import functools
import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class SeqLabError(Exception):
    """A problem the user can fix: bad input, bad params, a missing file.

    The message is printed on one line, so it must name the file and, where there is one, the key.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def exit_on_error(main: Callable[..., T]) -> Callable[..., T]:
    """Run ``main``; on SeqLabError print ``error: <message>`` to stderr and exit with status 1."""

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except SeqLabError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise SystemExit(130) from None

    return guarded
