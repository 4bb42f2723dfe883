"""Reading the files under a configured /proc or /sys root.

Each subsystem reads its files itself, by an explicit path under host.procfs or
host.sysfs, and hands the text to a pure parser (text in, values out), as
node_exporter does. psutil is not used for these on Linux: it takes its /proc root
from a process-wide global and reads /sys from hard-coded paths, so it could not
be pointed at another root safely (docs/architecture.md).
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
