"""node_load1, node_load5, node_load15, from /proc/loadavg.

Read directly on Linux: psutil.getloadavg() is os.getloadavg(), glibc's
getloadavg(3), which opens /proc/loadavg itself and so ignores host.procfs (and
psutil.PROCFS_PATH).
"""

from __future__ import annotations

import os

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.procfile import LINUX, read_text, under

__all__ = ["LoadavgCollector", "parse_loadavg"]


def parse_loadavg(text: str) -> tuple[float, float, float]:
    """The three load averages: "0.05 0.21 0.18 1/86 10004" -> (0.05, 0.21, 0.18)."""
    parts = text.split()
    if len(parts) < 3:
        raise ValueError(f"unexpected /proc/loadavg: {text.strip()!r}")
    return float(parts[0]), float(parts[1]), float(parts[2])


class LoadavgCollector:
    name = "loadavg"

    def __init__(self, procfs: str = "/proc") -> None:
        self._path = under(procfs, "loadavg")

    def collect(self) -> list[Metric]:
        one, five, fifteen = parse_loadavg(read_text(self._path)) if LINUX else os.getloadavg()
        return [
            GaugeMetricFamily("node_load1", "1m load average.", value=one),
            GaugeMetricFamily("node_load5", "5m load average.", value=five),
            GaugeMetricFamily("node_load15", "15m load average.", value=fifteen),
        ]
