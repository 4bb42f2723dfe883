"""node_network_* per interface, from psutil.net_io_counters(pernic=True), which
reads {PROCFS_PATH}/net/dev: the same columns node_exporter's netdev collector
takes for these eight counters (bytes, packets, errs, drop, each way).
"""

from __future__ import annotations

import psutil
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.config import NetworkConfig
from tickscope.collectors.host.wrap import WrapGuard
from tickscope.collectors.procfs_root import psutil_procfs

__all__ = ["STEMS", "NetdevCollector"]

# node_exporter's name stems, and the psutil field each comes from.
_FIELDS = {
    "receive_bytes": "bytes_recv",
    "transmit_bytes": "bytes_sent",
    "receive_packets": "packets_recv",
    "transmit_packets": "packets_sent",
    "receive_errs": "errin",
    "transmit_errs": "errout",
    "receive_drop": "dropin",
    "transmit_drop": "dropout",
}
STEMS = tuple(_FIELDS)


class NetdevCollector:
    name = "netdev"

    def __init__(self, config: NetworkConfig, procfs: str = "/proc") -> None:
        self._devices = config.devices
        self._procfs = procfs
        self._wraps = WrapGuard()

    def read(self) -> dict[str, tuple[int, ...]]:
        """Every interface's counters in STEMS order, kept monotonic across wrap-arounds."""
        # nowrap=False, and the wraps added back by this collector's own guard:
        # psutil's nowrap state is one per process, keyed by function name only,
        # so two collectors reading different roots (a test's fixture tree beside
        # the real /proc) would each see the other's values as wraps.
        with psutil_procfs(self._procfs):
            per_nic = psutil.net_io_counters(pernic=True, nowrap=False)
        raw = {
            nic: tuple(getattr(c, field) for field in _FIELDS.values())
            for nic, c in per_nic.items()
        }
        # Every interface goes through the guard, filtered or not: the filter only
        # decides what is exported.
        return self._wraps.adjust(raw)

    def collect(self) -> list[Metric]:
        families = [
            CounterMetricFamily(
                f"node_network_{stem}", f"Network device statistic {stem}.", labels=["device"]
            )
            for stem in STEMS
        ]
        for device, values in sorted(self.read().items()):
            if not self._devices.keeps(device):
                continue
            for family, value in zip(families, values, strict=True):
                family.add_metric([device], value)
        return list[Metric](families)
