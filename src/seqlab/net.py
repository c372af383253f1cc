"""A quick reachability probe, so a server that is not there fails in seconds rather than after retries."""

from __future__ import annotations

import socket


def unreachable(host: str, port: int, timeout: float = 5.0) -> str | None:
    """Why a TCP connection to ``host:port`` fails within ``timeout`` seconds, or None when it succeeds."""
    try:
        socket.create_connection((host.strip("[]"), port), timeout=timeout).close()
    except OSError as err:
        return err.strerror or ("timed out" if isinstance(err, TimeoutError) else type(err).__name__)
    return None
