"""Finding a watched process by name, command line or pid file.

In Kubernetes the pod sets shareProcessNamespace, so the engine container's
processes are visible to the sidecar; on a host, every process is. The finder
runs inside procfs_root.psutil_procfs(), so psutil lists and reads the configured root.
"""

from __future__ import annotations

import os
import stat

import psutil

from tickscope.collectors.engine.config import EngineProcessConfig
from tickscope.collectors.engine.procfs import own_pid

__all__ = ["PidFileError", "check_pid_file", "find_process"]


class PidFileError(Exception):
    """The pid file exists but cannot be read or holds no PID."""


# A PID is at most 7 digits (pid_max <= 2^22); 64 bytes also holds a trailing newline
# and whatever a daemon appends after a space. Nothing past it is read.
_PID_FILE_READ_BYTES = 64


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode):
        return "a character device"
    if stat.S_ISBLK(mode):
        return "a block device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _read_head(path: str) -> bytes | None:
    """The first bytes of the regular file at `path`; None when it does not exist.

    A FIFO opened the ordinary way blocks until a writer appears: at startup that
    held the sidecar before its server listened, and in a collection it hung the
    worker past the collect timeout, so the snapshot went stale, every engine
    series vanished and readiness was never re-evaluated. The path is stat'ed and
    refused unless it is a regular file (symlinks to one are followed), then
    opened O_NONBLOCK (a FIFO swapped in between the two does not block either)
    and checked again on the open descriptor.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PidFileError(f"cannot read pid file {path}: {exc.strerror or exc}") from exc
    if not stat.S_ISREG(st.st_mode):
        raise PidFileError(f"pid file {path} is {_kind(st.st_mode)}, not a regular file")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        return None  # removed since the stat: not running
    except OSError as exc:
        raise PidFileError(f"cannot read pid file {path}: {exc.strerror or exc}") from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise PidFileError(f"pid file {path} is {_kind(mode)}, not a regular file")
        return os.read(fd, _PID_FILE_READ_BYTES)
    except OSError as exc:
        raise PidFileError(f"cannot read pid file {path}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def check_pid_file(path: str) -> None:
    """Raise PidFileError if `path` exists but cannot be read or is not a regular file.

    Used at startup: a missing file is normal (the engine is not up yet), but one
    the sidecar cannot read is a deployment mistake that will never fix itself.
    Never blocks (see _read_head).
    """
    _read_head(path)


def _read_pid_file(path: str) -> int | None:
    raw = _read_head(path)
    if raw is None:
        return None
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
    # Any local user writes a command line: config.cmdline is a LinearRegex (RE2),
    # so a backtracking pattern cannot stall this scan (core/configtypes.py).
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
