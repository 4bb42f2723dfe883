"""node_filefd_allocated and node_filefd_maximum from /proc/sys/fs/file-nr.

Read directly: psutil has no figure from this file.
"""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.procfile import read_text, under

__all__ = ["FilefdCollector", "parse_file_nr"]


def parse_file_nr(text: str) -> tuple[float, float]:
    """(allocated, maximum) from "allocated  free  maximum" (free is always 0 since 2.6)."""
    parts = text.split()
    if len(parts) != 3:
        raise ValueError(f"unexpected /proc/sys/fs/file-nr: {text.strip()!r}")
    return float(parts[0]), float(parts[2])


class FilefdCollector:
    """Linux only: no other system has the file."""

    name = "filefd"

    def __init__(self, procfs: str = "/proc") -> None:
        self._path = under(procfs, "sys/fs/file-nr")

    def collect(self) -> list[Metric]:
        allocated, maximum = parse_file_nr(read_text(self._path))
        return [
            GaugeMetricFamily(
                "node_filefd_allocated", "File descriptor statistics: allocated.", value=allocated
            ),
            GaugeMetricFamily(
                "node_filefd_maximum", "File descriptor statistics: maximum.", value=maximum
            ),
        ]
