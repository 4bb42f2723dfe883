"""Kernel-wide counters from /proc/stat: boot time, context switches, interrupts."""

from __future__ import annotations

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

__all__ = ["StatCollector"]


class StatCollector:
    name = "stat"

    def __init__(self) -> None:
        # btime never changes while the machine is up.
        self._boot_time = psutil.boot_time()

    def collect(self) -> list[Metric]:
        stats = psutil.cpu_stats()
        return [
            GaugeMetricFamily(
                "node_boot_time_seconds", "Node boot time, in unixtime.", value=self._boot_time
            ),
            CounterMetricFamily(
                "node_context_switches",
                "Total number of context switches.",
                value=stats.ctx_switches,
            ),
            CounterMetricFamily(
                "node_intr", "Total number of interrupts serviced.", value=stats.interrupts
            ),
        ]
