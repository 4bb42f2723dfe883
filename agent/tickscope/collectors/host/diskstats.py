"""node_disk_* for whole disks, from psutil.disk_io_counters(perdisk=True), which
reads {PROCFS_PATH}/diskstats.

psutil takes the fields node_exporter's diskstats collector takes, with the same
units: reads and writes completed, sectors read and written times 512 (the block
layer's sector, whatever the device's), milliseconds reading and writing, and
busy_time, the milliseconds spent doing I/O (node_disk_io_time_seconds_total). It
reads the line shapes of every kernel in use (14 fields on 2.6+, 18 on 4.18+, 20
on 5.5+, and 2.6's 7-field partition lines, which carry no times) and, with
perdisk=True, returns every device, partitions too: the filter here decides what
is exported.

Where {PROCFS_PATH}/diskstats is missing, psutil falls back to /sys/block, the
real one whatever the configured roots: then it would report the sidecar's own
machine for a node it does not describe. The file is checked first, and a
missing one is this subsystem's error, as node_exporter's would be.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

import psutil
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.config import DiskConfig
from tickscope.collectors.host.procfile import LINUX, under
from tickscope.collectors.host.wrap import WrapGuard
from tickscope.collectors.procfs_root import psutil_procfs

__all__ = ["DiskStats", "DiskstatsCollector"]


class DiskStats(NamedTuple):
    """One device's counters as psutil gives them: bytes, and milliseconds."""

    reads: int
    writes: int
    read_bytes: int
    written_bytes: int
    read_ms: int
    write_ms: int
    io_ms: int | None  # None where psutil has no busy_time (only Linux and FreeBSD do)


def _counters(c: object) -> tuple[int, ...]:
    fields = ("read_count", "write_count", "read_bytes", "write_bytes", "read_time", "write_time")
    busy = getattr(c, "busy_time", None)
    return tuple(getattr(c, f) for f in fields) + (() if busy is None else (busy,))


def _disk_stats(v: tuple[int, ...]) -> DiskStats:
    return DiskStats(v[0], v[1], v[2], v[3], v[4], v[5], v[6] if len(v) > 6 else None)


class DiskstatsCollector:
    name = "diskstats"

    def __init__(self, config: DiskConfig, procfs: str = "/proc") -> None:
        self._devices = config.devices
        self._procfs = procfs
        self._path = under(procfs, "diskstats")
        self._wraps = WrapGuard()

    def read(self) -> dict[str, DiskStats]:
        """Every device's counters, kept monotonic across 32-bit wrap-arounds."""
        # Not quite atomic with psutil's own check, but a /proc does not lose its
        # diskstats between two calls: this rules out the /sys/block fallback.
        if LINUX and not os.path.exists(self._path):
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self._path)
        # nowrap=False, and the wraps added back by this collector's own guard:
        # psutil's nowrap state is one per process, keyed by function name only,
        # so two collectors reading different roots (a test's fixture tree beside
        # the real /proc) would each see the other's values as wraps.
        with psutil_procfs(self._procfs):
            per_disk = psutil.disk_io_counters(perdisk=True, nowrap=False)
        # The guard sees every device, filtered or not: the filter only decides
        # what is exported.
        adjusted = self._wraps.adjust({dev: _counters(c) for dev, c in per_disk.items()})
        return {dev: _disk_stats(values) for dev, values in adjusted.items()}

    def collect(self) -> list[Metric]:
        def counter(name: str, doc: str) -> CounterMetricFamily:
            return CounterMetricFamily(name, doc, labels=["device"])

        reads = counter(
            "node_disk_reads_completed", "The total number of reads completed successfully."
        )
        writes = counter(
            "node_disk_writes_completed", "The total number of writes completed successfully."
        )
        read_bytes = counter("node_disk_read_bytes", "The total number of bytes read successfully.")
        written = counter(
            "node_disk_written_bytes", "The total number of bytes written successfully."
        )
        read_time = counter(
            "node_disk_read_time_seconds", "The total number of seconds spent by all reads."
        )
        write_time = counter(
            "node_disk_write_time_seconds",
            "This is the total number of seconds spent by all writes.",
        )
        io_time = counter("node_disk_io_time_seconds", "Total seconds spent doing I/Os.")
        for device, c in sorted(self.read().items()):
            if not self._devices.keeps(device):
                continue
            labels = [device]
            reads.add_metric(labels, c.reads)
            writes.add_metric(labels, c.writes)
            read_bytes.add_metric(labels, c.read_bytes)
            written.add_metric(labels, c.written_bytes)
            read_time.add_metric(labels, c.read_ms / 1000.0)
            write_time.add_metric(labels, c.write_ms / 1000.0)
            if c.io_ms is not None:
                io_time.add_metric(labels, c.io_ms / 1000.0)
        return [reads, writes, read_bytes, written, read_time, write_time, io_time]
