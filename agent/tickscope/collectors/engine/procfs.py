"""The two per-process figures psutil makes expensive: swap and the fd limit.

psutil's memory_full_info() walks /proc/PID/smaps for swap (~0.3 ms on a small
process, far more on a large one) and rlimit() needs prlimit rights over the
target. /proc/PID/status and /proc/PID/limits hold both, cheaply, and are
readable by any process that can see the PID.
"""

from __future__ import annotations

__all__ = ["read_max_fds", "read_swap_bytes"]


def read_swap_bytes(pid: int, procfs: str = "/proc") -> float | None:
    with open(f"{procfs}/{pid}/status", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("VmSwap:"):
                parts = line.split()
                return float(parts[1]) * 1024  # always kB
    return None  # kernel threads have no VmSwap line


def read_max_fds(pid: int, procfs: str = "/proc") -> float | None:
    with open(f"{procfs}/{pid}/limits", encoding="ascii", errors="replace") as f:
        for line in f:
            if line.startswith("Max open files"):
                soft = line[len("Max open files") :].split()[0]
                return float("inf") if soft == "unlimited" else float(soft)
    return None
