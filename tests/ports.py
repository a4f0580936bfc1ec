"""Ports for test servers on loopback."""

from __future__ import annotations

import socket


def loopback_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (and nothing listens on)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
