"""Finding a watched process by name, command line or pid file.

In Kubernetes the pod sets shareProcessNamespace, so the engine container's
processes are visible to the sidecar; on a host, every process is.
"""

from __future__ import annotations

import os

import psutil

from tickscope.collectors.engine.config import EngineProcessConfig

__all__ = ["PidFileError", "check_pid_file", "find_process"]


class PidFileError(Exception):
    """The pid file exists but cannot be read or holds no PID."""


def check_pid_file(path: str) -> None:
    """Raise PidFileError if `path` exists but cannot be read.

    Used at startup: a missing file is normal (the engine is not up yet), but one
    the sidecar cannot read is a deployment mistake that will never fix itself.
    """
    try:
        with open(path, "rb") as f:
            f.read(64)
    except FileNotFoundError:
        return
    except OSError as exc:
        raise PidFileError(f"cannot read pid file {path}: {exc.strerror or exc}") from exc


def _read_pid_file(path: str) -> int | None:
    try:
        with open(path, "rb") as f:
            raw = f.read(64)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidFileError(f"cannot read pid file {path}: {exc.strerror or exc}") from exc
    text = raw.decode("ascii", errors="replace").strip()
    if not text:
        return None  # being written, or truncated on exit: not running
    try:
        pid = int(text.split()[0])
    except ValueError:
        raise PidFileError(f"pid file {path} does not hold a PID: {text[:32]!r}") from None
    if pid <= 0:
        raise PidFileError(f"pid file {path} holds an invalid PID: {pid}")
    return pid


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def find_process(config: EngineProcessConfig) -> psutil.Process | None:
    """The process `config` describes, or None. With several matches, the oldest
    (as `pgrep -o`): an engine's worker children match its command line too."""
    if config.pid_file is not None:
        pid = _read_pid_file(config.pid_file)
        if pid is None:
            return None
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            return None
        return proc if _alive(proc) else None

    own = os.getpid()
    best: psutil.Process | None = None
    best_created = float("inf")
    for proc in psutil.process_iter(["name", "cmdline", "create_time", "status"]):
        info = proc.info
        if proc.pid == own or info.get("status") == psutil.STATUS_ZOMBIE:
            continue
        if config.process_name is not None:
            if info.get("name") != config.process_name:
                continue
        elif config.cmdline is not None:
            cmdline = info.get("cmdline")
            if not cmdline or not config.cmdline.search(" ".join(cmdline)):
                continue
        created = info.get("create_time") or 0.0
        if created < best_created:
            best, best_created = proc, created
    return best
