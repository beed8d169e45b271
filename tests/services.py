"""Helpers for the services the suite starts itself (Azurite, moto S3, the tansu broker)."""

from __future__ import annotations

import socket
from pathlib import Path

__all__ = ["accepts", "free_port", "log_tail"]


def free_port() -> int:
    """A port on 127.0.0.1 where nothing listens (right now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def accepts(port: int) -> bool:
    """Whether something on 127.0.0.1:`port` accepts a connection."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def log_tail(path: Path, lines: int) -> str:
    """The last `lines` non-blank lines of a service's log, on one line (for failures)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return " | ".join(line for line in text.strip().splitlines()[-lines:] if line.strip())
