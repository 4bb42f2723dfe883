"""psutil's /proc root, shared by every collector that reads through psutil.

psutil takes the root of every Linux read from one module global,
`psutil.PROCFS_PATH`: psutil.cpu_stats(), boot_time(), net_io_counters() and
disk_io_counters() read {PROCFS_PATH}/stat, /net/dev and /diskstats when called,
psutil.pids() lists it, and a psutil.Process keeps the value it had when it was
made. The host collector (host.procfs, the node's /proc) and the engine-process
collector (engine.procfs, the pod's) may want different roots, and they run in
different worker threads.

`psutil_procfs(root)` is the one way the sidecar points psutil anywhere: it takes
the lock below, the only one in the process for this, sets the global, and puts
the old value back when the block ends. Every psutil call the sidecar makes on
Linux runs inside such a block (nothing else in the sidecar calls psutil), so a
read inside a block sees that block's root and no other thread can move it
meanwhile. Hold it only around psutil calls: a thread waiting for it waits for
the whole block of the other collector.

The lock is reentrant: a block opened inside another one in the same thread sets
its own root and, on leaving, restores the outer block's root instead of
deadlocking.

Where psutil has no PROCFS_PATH (macOS, Windows, the BSDs) it reads the system's
own interfaces and no root applies: the block only takes the lock.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import psutil

__all__ = ["psutil_procfs"]

_PSUTIL_ROOT = threading.RLock()
_HAS_ROOT = hasattr(psutil, "PROCFS_PATH")


@contextmanager
def psutil_procfs(procfs: str) -> Iterator[None]:
    """Point psutil at `procfs` for the duration of the block (see the module's doc)."""
    with _PSUTIL_ROOT:
        if not _HAS_ROOT:
            yield
            return
        saved = psutil.PROCFS_PATH
        psutil.PROCFS_PATH = procfs
        try:
            yield
        finally:
            psutil.PROCFS_PATH = saved
