"""node_memory_*_bytes from /proc/meminfo, field for field as node_exporter names them.

psutil.virtual_memory() reads the same file but folds SReclaimable into "cached"
and exposes only a few fields, so node_memory_Cached_bytes would not mean what
every node_exporter dashboard takes it to mean. On Linux the file is read
directly; elsewhere psutil's figures fill the contract's fields.
"""

from __future__ import annotations

import re

import psutil
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.procfile import LINUX, read_text, under

__all__ = ["DEFAULT_FIELDS", "MeminfoCollector", "parse_meminfo"]

_PARENS = re.compile(r"\((.*)\)")

# The contract's fields and the ones node_exporter dashboards chart most. The
# remaining ~40 fields of /proc/meminfo are exported with host.meminfo_all_fields.
DEFAULT_FIELDS = frozenset(
    {
        "MemTotal_bytes",
        "MemAvailable_bytes",
        "MemFree_bytes",
        "Buffers_bytes",
        "Cached_bytes",
        "SwapTotal_bytes",
        "SwapFree_bytes",
        "SwapCached_bytes",
        "Active_bytes",
        "Inactive_bytes",
        "Dirty_bytes",
        "Writeback_bytes",
        "Shmem_bytes",
        "Slab_bytes",
        "SReclaimable_bytes",
        "AnonPages_bytes",
        "Mapped_bytes",
        "Committed_AS_bytes",
        "CommitLimit_bytes",
    }
)


def parse_meminfo(text: str) -> dict[str, float]:
    """Map node_exporter's metric-name stem (without node_memory_) to its value.

    "Active(anon):  1024 kB" becomes {"Active_anon_bytes": 1048576.0}; fields
    without a unit (HugePages_Total) keep their name and raw value.
    """
    values: dict[str, float] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2 or not parts[0].endswith(":"):
            continue
        key = _PARENS.sub(r"_\1", parts[0][:-1])
        try:
            value = float(parts[1])
        except ValueError:
            continue
        if len(parts) == 3 and parts[2] == "kB":
            value *= 1024
            key += "_bytes"
        values[key] = value
    return values


def _from_psutil() -> dict[str, float]:
    vm = psutil.virtual_memory()
    swap = psutil.swap_memory()
    values = {
        "MemTotal_bytes": float(vm.total),
        "MemAvailable_bytes": float(vm.available),
        "MemFree_bytes": float(vm.free),
        "SwapTotal_bytes": float(swap.total),
        "SwapFree_bytes": float(swap.free),
    }
    for field, key in (("buffers", "Buffers_bytes"), ("cached", "Cached_bytes")):
        if hasattr(vm, field):
            values[key] = float(getattr(vm, field))
    return values


class MeminfoCollector:
    name = "meminfo"

    def __init__(self, all_fields: bool = False, procfs: str = "/proc") -> None:
        self._path = under(procfs, "meminfo")
        self._all = all_fields

    def collect(self) -> list[Metric]:
        values = parse_meminfo(read_text(self._path)) if LINUX else _from_psutil()
        return [
            GaugeMetricFamily(
                f"node_memory_{key}",
                f"Memory information field {key}.",
                value=value,
            )
            for key, value in values.items()
            if self._all or key in DEFAULT_FIELDS
        ]
