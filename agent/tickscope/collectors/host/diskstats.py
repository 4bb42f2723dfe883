"""node_disk_* from /proc/diskstats (through psutil), for whole disks only."""

from __future__ import annotations

import psutil
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.config import DiskConfig

__all__ = ["DiskstatsCollector"]


class DiskstatsCollector:
    name = "diskstats"

    def __init__(self, config: DiskConfig) -> None:
        self._devices = config.devices

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
        # nowrap: psutil adds back what a 32-bit kernel counter lost on wrap-around,
        # so the series stays monotonic for rate().
        per_disk = psutil.disk_io_counters(perdisk=True, nowrap=True) or {}
        for device, c in sorted(per_disk.items()):
            if not self._devices.keeps(device):
                continue
            labels = [device]
            reads.add_metric(labels, c.read_count)
            writes.add_metric(labels, c.write_count)
            read_bytes.add_metric(labels, c.read_bytes)
            written.add_metric(labels, c.write_bytes)
            read_time.add_metric(labels, c.read_time / 1000.0)
            write_time.add_metric(labels, c.write_time / 1000.0)
            busy = getattr(c, "busy_time", None)  # Linux and FreeBSD only
            if busy is not None:
                io_time.add_metric(labels, busy / 1000.0)
        return [reads, writes, read_bytes, written, read_time, write_time, io_time]
