"""Finding a watched process by name, command line or pid file.

In Kubernetes the pod sets shareProcessNamespace, so the engine container's
processes are visible to the sidecar; on a host, every process is. The finder
runs inside procfs_root.psutil_procfs(), so psutil lists and reads the configured root.
"""

from __future__ import annotations

import psutil

from tickscope.collectors.engine.config import EngineProcessConfig
from tickscope.collectors.engine.procfs import own_pid

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


def _matches(proc: psutil.Process, config: EngineProcessConfig) -> bool:
    if config.process_name is not None:
        return proc.name() == config.process_name
    assert config.cmdline is not None  # the config allows exactly one matcher
    cmdline = proc.cmdline()
    return bool(cmdline) and config.cmdline.search(" ".join(cmdline)) is not None


def find_process(config: EngineProcessConfig, procfs: str = "/proc") -> psutil.Process | None:
    """The process `config` describes, or None. With several matches, the oldest
    (as `pgrep -o`): an engine's worker children match its command line too.

    Every candidate is a fresh psutil.Process rather than one from
    psutil.process_iter(), whose cache is process-wide and keeps each Process's
    root from when it was made: a scan of one root could be answered with
    another's. A scan runs only while the engine is not found, so the extra read
    of /proc/PID/stat per process costs little.
    """
    if config.pid_file is not None:
        pid = _read_pid_file(config.pid_file)
        if pid is None:
            return None
        try:
            proc = psutil.Process(pid)
        except psutil.Error:
            return None
        return proc if _alive(proc) else None

    own = own_pid(procfs)
    best: psutil.Process | None = None
    best_created = float("inf")
    for pid in psutil.pids():
        if pid == own:
            continue
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                if proc.status() == psutil.STATUS_ZOMBIE or not _matches(proc, config):
                    continue
                created = proc.create_time()
        except psutil.Error:
            continue  # gone since the listing, or not ours to read
        if created < best_created:
            best, best_created = proc, created
    return best
