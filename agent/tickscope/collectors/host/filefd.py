"""node_filefd_allocated and node_filefd_maximum from /proc/sys/fs/file-nr."""

from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

__all__ = ["FilefdCollector"]


class FilefdCollector:
    name = "filefd"

    def __init__(self, path: str = "/proc/sys/fs/file-nr") -> None:
        self._path = path

    def collect(self) -> list[Metric]:
        with open(self._path, encoding="ascii") as f:
            fields = f.read().split()
        # "allocated  free(always 0 since 2.6)  maximum"
        return [
            GaugeMetricFamily(
                "node_filefd_allocated",
                "File descriptor statistics: allocated.",
                value=float(fields[0]),
            ),
            GaugeMetricFamily(
                "node_filefd_maximum",
                "File descriptor statistics: maximum.",
                value=float(fields[2]),
            ),
        ]
