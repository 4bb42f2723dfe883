"""Errors that end the process with exit code 2 and one clear line."""

from __future__ import annotations

import errno

__all__ = ["ListenError", "StartupError"]


class StartupError(Exception):
    """The sidecar cannot start as configured; the message says why and what to change."""


class ListenError(StartupError):
    def __init__(self, what: str, key: str, host: str, port: int, exc: OSError) -> None:
        reason = {
            errno.EADDRINUSE: "address already in use (another process listens there)",
            errno.EACCES: "permission denied (ports below 1024 need privileges)",
            errno.EADDRNOTAVAIL: "address not available on this machine",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        super().__init__(f"cannot listen for {what} on {host}:{port} ({key}): {reason}")
