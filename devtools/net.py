"""Loopback helpers for the development tools, the tests and the benchmark."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit


def answers(url: str, timeout: float = 1.0) -> bool:
    """Whether something accepts TCP connections at the host and port of `url`."""
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 0), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
