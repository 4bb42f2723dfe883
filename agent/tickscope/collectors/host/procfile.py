"""Reading the files under a configured /proc or /sys root directly.

Where psutil provides a figure with node_exporter's semantics (stat, netdev,
diskstats) the subsystem reads it through psutil, pointed at host.procfs by
collectors/procfs_root.py. The others read their files here, by an explicit path
under host.procfs or host.sysfs, and hand the text to a pure parser, each module
saying why psutil does not fit (docs/architecture.md, "Why some figures bypass
psutil").
"""

from __future__ import annotations

import os
import sys

__all__ = ["LINUX", "read_text", "under"]

# Elsewhere (a developer's laptop) the subsystems fall back to psutil's readings.
LINUX = sys.platform.startswith("linux")


def under(root: str, *parts: str) -> str:
    """`root`/`parts`, where a part that starts with "/" still stays under `root`
    ("/host" and "/" give "/host", not "/")."""
    return os.path.normpath(os.path.join(root, *(part.lstrip("/") for part in parts)))


def read_text(path: str) -> str:
    # Kernel files are ASCII, but interface names and mount points may hold any
    # bytes: a stray one must not fail the whole subsystem.
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read()
