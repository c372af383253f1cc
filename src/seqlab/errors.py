"""The one user-facing error type, and the guard that turns it into one line and an exit code."""

from __future__ import annotations

import errno
import functools
import os
import signal
import sys
from typing import Callable, TypeVar

T = TypeVar("T")
MACHINE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES}  # the machine's, said in one line


class SeqLabError(Exception):
    """A problem the user can fix: bad input, bad params, a missing file.

    The message is printed on one line, so it must name the file and, where there is one, the key.
    """

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


def exit_on_error(main: Callable[..., T]) -> Callable[..., T]:
    """Run ``main``; on SeqLabError, or a full, read-only or forbidden file system, print ``error:
    <message>`` to stderr and exit with status 1."""

    @functools.wraps(main)
    def guarded(*args, **kwargs):
        try:
            result = main(*args, **kwargs)
            sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
            return result
        except SeqLabError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(1) from None
        except KeyboardInterrupt:
            print("error: interrupted", file=sys.stderr)
            raise SystemExit(130) from None
        except BrokenPipeError:
            # the reader of stdout stopped (`seqlab predict ... | head -3`): stop quietly, as a shell tool does
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise SystemExit(128 + signal.SIGPIPE) from None
        except OSError as err:
            if err.errno not in MACHINE_ERRNOS:
                raise
            print(f"error: {err.filename or 'writing'}: {err.strerror}", file=sys.stderr)
            raise SystemExit(1) from None

    return guarded
