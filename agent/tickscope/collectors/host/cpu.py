"""node_cpu_seconds_total, as node_exporter's cpu collector writes it."""

from __future__ import annotations

import psutil
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

__all__ = ["CPUCollector"]

# The /proc/stat columns node_exporter exports as modes (guest time is already
# inside user and nice, so node_exporter keeps it out of this metric, as do we).
MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


class CPUCollector:
    name = "cpu"

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(
            "node_cpu_seconds", "Seconds the CPUs spent in each mode.", labels=["cpu", "mode"]
        )
        for cpu, times in enumerate(psutil.cpu_times(percpu=True)):
            label = str(cpu)
            for mode in MODES:
                value = getattr(times, mode, None)
                if value is not None:
                    family.add_metric([label, mode], value)
        return [family]
