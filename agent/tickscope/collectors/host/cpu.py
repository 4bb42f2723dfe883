"""node_cpu_seconds_total, as node_exporter's cpu collector writes it, from /proc/stat.

On Linux the file is read here, not through psutil.cpu_times(percpu=True), whose
semantics differ from the contract's in two ways (psutil 7.2, _pslinux.py):

- per_cpu_times() returns a list, one entry per "cpuN" line in file order, and
  drops the N: a CPU's number is its position. The kernel prints online CPUs
  only, so with cpu2 offline psutil's third entry is cpu3, and every CPU after
  the gap would be exported under another CPU's label. node_exporter labels
  each by the N of its line, and so does parse_cpu_times().
- psutil sizes its scputimes tuple once, at import, from the first line of the
  real /proc/stat, and cuts every later reading to that many columns: a
  host.procfs whose kernel prints fewer columns (no steal before 2.6.11) fails
  in the namedtuple instead of leaving the mode out.

Elsewhere (no /proc) psutil's readings are all there is, numbered by position.
"""

from __future__ import annotations

import os

import psutil
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.procfile import LINUX, read_text, under

__all__ = ["MODES", "CPUCollector", "parse_cpu_times"]

# The /proc/stat columns node_exporter exports as modes, in the file's order (guest
# time is already inside user and nice, so node_exporter keeps it out of this
# metric, as do we).
MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def parse_cpu_times(text: str, ticks_per_second: float) -> dict[str, dict[str, float]]:
    """CPU number (as a label) -> mode -> seconds, from /proc/stat's "cpuN" lines.

    The label is the N of the line, not the line's position: with a CPU offline
    the numbering has a gap, and node_exporter keeps it. Older kernels print fewer
    columns; the modes they lack are left out.
    """
    cpus: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if not parts or not parts[0].startswith("cpu"):
            continue
        number = parts[0][3:]
        if not number.isdigit():  # the "cpu" line sums all CPUs
            continue
        cpus[number] = {
            mode: float(value) / ticks_per_second
            for mode, value in zip(MODES, parts[1:], strict=False)
        }
    return cpus


def _from_psutil() -> dict[str, dict[str, float]]:
    return {
        str(cpu): {mode: getattr(times, mode) for mode in MODES if hasattr(times, mode)}
        for cpu, times in enumerate(psutil.cpu_times(percpu=True))
    }


class CPUCollector:
    name = "cpu"

    def __init__(self, procfs: str = "/proc") -> None:
        self._path = under(procfs, "stat")
        # USER_HZ, the unit of /proc/stat; 100 on every Linux architecture in use.
        self._ticks = float(os.sysconf("SC_CLK_TCK")) if LINUX else 1.0

    def collect(self) -> list[Metric]:
        family = CounterMetricFamily(
            "node_cpu_seconds", "Seconds the CPUs spent in each mode.", labels=["cpu", "mode"]
        )
        cpus = parse_cpu_times(read_text(self._path), self._ticks) if LINUX else _from_psutil()
        for cpu, modes in cpus.items():
            for mode, seconds in modes.items():
                family.add_metric([cpu, mode], seconds)
        return [family]
