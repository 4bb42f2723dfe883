"""node_disk_* from /proc/diskstats, for whole disks only."""

from __future__ import annotations

from typing import NamedTuple

import psutil
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.config import DiskConfig
from tickscope.collectors.host.procfile import LINUX, read_text, under
from tickscope.collectors.host.wrap import WrapGuard

__all__ = ["DiskStats", "DiskstatsCollector", "parse_diskstats"]

# /proc/diskstats counts sectors of 512 bytes whatever the device's sector size
# (the block layer's unit); node_exporter and psutil multiply by the same.
SECTOR_BYTES = 512


class DiskStats(NamedTuple):
    """One device's counters as the kernel keeps them: bytes, and milliseconds."""

    reads: int
    writes: int
    read_bytes: int
    written_bytes: int
    read_ms: int
    write_ms: int
    io_ms: int | None  # None where the platform does not count busy time


def parse_diskstats(text: str) -> dict[str, DiskStats]:
    """Device name -> counters, for every line of /proc/diskstats (partitions too).

    Linux 2.6+ prints 14 fields per line, 4.18+ 18 and 5.5+ 20; the first 14 mean
    the same in all. Linux 2.6's short 7-field partition lines carry only counts
    and sectors.
    """
    devices: dict[str, DiskStats] = {}
    for line in text.splitlines():
        fields = line.split()
        if not fields:
            continue
        name = fields[2] if len(fields) > 2 else ""
        if len(fields) == 14 or len(fields) >= 18:
            reads, _, read_sectors, read_ms, writes, _, write_sectors, write_ms, _, io_ms = map(
                int, fields[3:13]
            )
        elif len(fields) == 7:
            reads, read_sectors, writes, write_sectors = map(int, fields[3:7])
            read_ms = write_ms = io_ms = 0
        else:
            raise ValueError(f"unexpected /proc/diskstats line: {line.strip()!r}")
        devices[name] = DiskStats(
            reads,
            writes,
            read_sectors * SECTOR_BYTES,
            write_sectors * SECTOR_BYTES,
            read_ms,
            write_ms,
            io_ms,
        )
    return devices


def _ints(stats: DiskStats) -> tuple[int, ...]:
    return tuple(0 if value is None else value for value in stats)


def _from_psutil() -> dict[str, DiskStats]:
    # nowrap: psutil adds back what a 32-bit counter lost on wrap-around itself.
    return {
        device: DiskStats(
            c.read_count,
            c.write_count,
            c.read_bytes,
            c.write_bytes,
            c.read_time,
            c.write_time,
            getattr(c, "busy_time", None),  # Linux and FreeBSD only
        )
        for device, c in (psutil.disk_io_counters(perdisk=True, nowrap=True) or {}).items()
    }


class DiskstatsCollector:
    name = "diskstats"

    def __init__(self, config: DiskConfig, procfs: str = "/proc") -> None:
        self._devices = config.devices
        self._path = under(procfs, "diskstats")
        self._wraps = WrapGuard()

    def read(self) -> dict[str, DiskStats]:
        """Every device's counters, kept monotonic across 32-bit wrap-arounds."""
        if not LINUX:
            return _from_psutil()
        raw = parse_diskstats(read_text(self._path))
        # The guard sees every device, filtered or not, as psutil's did: the
        # filter only decides what is exported.
        adjusted = self._wraps.adjust({device: _ints(stats) for device, stats in raw.items()})
        return {device: DiskStats(*values) for device, values in adjusted.items()}

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
