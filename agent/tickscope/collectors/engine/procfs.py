"""Reading a process under a configured /proc: two figures read directly.

psutil reads everything else, with its root, psutil.PROCFS_PATH, set to
engine.procfs for the whole collection by collectors/procfs_root.py: psutil.pids()
lists it, a psutil.Process keeps the value it had when the Process was made, and
Process.create_time() adds psutil.boot_time(), which reads {PROCFS_PATH}/stat
when called. So the global must hold the engine's root while processes are
found, made and first read.

Swap and the fd limit are read here directly. psutil's memory_full_info() walks
/proc/PID/smaps for swap (~0.3 ms on a small process, far more on a large one) and
rlimit() needs prlimit rights over the target. /proc/PID/status and
/proc/PID/limits hold both, cheaply, and are readable by any process that can
see the PID.
"""

from __future__ import annotations

import os

__all__ = [
    "own_pid",
    "parse_max_fds",
    "parse_swap_bytes",
    "read_max_fds",
    "read_swap_bytes",
]


def own_pid(procfs: str) -> int | None:
    """The sidecar's own PID as `procfs` numbers it ({procfs}/self), or None when that
    procfs does not show the sidecar (a fixture tree, another PID namespace)."""
    try:
        return int(os.readlink(os.path.join(procfs, "self")))
    except (OSError, ValueError):
        return None


def parse_swap_bytes(status: str) -> float | None:
    """VmSwap from the text of /proc/PID/status, in bytes; None for kernel threads,
    which have no VmSwap line."""
    for line in status.splitlines():
        if line.startswith("VmSwap:"):
            return float(line.split()[1]) * 1024  # always kB
    return None


def parse_max_fds(limits: str) -> float | None:
    """The soft "Max open files" limit from the text of /proc/PID/limits; +Inf when
    unlimited, None when the line is missing."""
    for line in limits.splitlines():
        if line.startswith("Max open files"):
            soft = line[len("Max open files") :].split()[0]
            return float("inf") if soft == "unlimited" else float(soft)
    return None


def _read(path: str) -> str:
    with open(path, encoding="ascii", errors="replace") as f:
        return f.read()


def read_swap_bytes(pid: int, procfs: str = "/proc") -> float | None:
    return parse_swap_bytes(_read(f"{procfs}/{pid}/status"))


def read_max_fds(pid: int, procfs: str = "/proc") -> float | None:
    return parse_max_fds(_read(f"{procfs}/{pid}/limits"))
