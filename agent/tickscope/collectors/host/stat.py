"""Kernel-wide counters from /proc/stat: boot time, context switches, interrupts."""

from __future__ import annotations

from typing import NamedTuple

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.procfile import LINUX, read_text, under

__all__ = ["KernelStat", "StatCollector", "parse_stat"]


class KernelStat(NamedTuple):
    boot_time: float
    context_switches: float
    interrupts: float


def parse_stat(text: str) -> KernelStat:
    """btime, ctxt and the first (total) number of intr from /proc/stat."""
    found: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) >= 2 and parts[0] in ("btime", "ctxt", "intr"):
            found[parts[0]] = float(parts[1])
    missing = [key for key in ("btime", "ctxt", "intr") if key not in found]
    if missing:
        raise ValueError(f"no {', '.join(missing)} line in /proc/stat")
    return KernelStat(found["btime"], found["ctxt"], found["intr"])


def _from_psutil() -> KernelStat:
    stats = psutil.cpu_stats()
    return KernelStat(psutil.boot_time(), stats.ctx_switches, stats.interrupts)


class StatCollector:
    name = "stat"

    def __init__(self, procfs: str = "/proc") -> None:
        self._path = under(procfs, "stat")

    def collect(self) -> list[Metric]:
        # btime is read every time, as node_exporter does: the kernel derives it from
        # the wall clock, so a clock step moves it.
        stat = parse_stat(read_text(self._path)) if LINUX else _from_psutil()
        return [
            GaugeMetricFamily(
                "node_boot_time_seconds", "Node boot time, in unixtime.", value=stat.boot_time
            ),
            CounterMetricFamily(
                "node_context_switches",
                "Total number of context switches.",
                value=stat.context_switches,
            ),
            CounterMetricFamily(
                "node_intr", "Total number of interrupts serviced.", value=stat.interrupts
            ),
        ]
