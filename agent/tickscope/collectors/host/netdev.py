"""node_network_* from /proc/net/dev, per interface."""

from __future__ import annotations

import psutil
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.config import NetworkConfig
from tickscope.collectors.host.procfile import LINUX, read_text, under
from tickscope.collectors.host.wrap import WrapGuard

__all__ = ["STEMS", "NetdevCollector", "parse_netdev"]

# node_exporter's name stems, and the /proc/net/dev column each comes from: eight
# receive columns, then eight transmit columns.
_COLUMNS = {
    "receive_bytes": 0,
    "transmit_bytes": 8,
    "receive_packets": 1,
    "transmit_packets": 9,
    "receive_errs": 2,
    "transmit_errs": 10,
    "receive_drop": 3,
    "transmit_drop": 11,
}
STEMS = tuple(_COLUMNS)

# psutil's field for each stem, where psutil reads the counters (not Linux).
_PSUTIL_FIELDS = (
    "bytes_recv",
    "bytes_sent",
    "packets_recv",
    "packets_sent",
    "errin",
    "errout",
    "dropin",
    "dropout",
)


def parse_netdev(text: str) -> dict[str, tuple[int, ...]]:
    """Interface -> its counters in STEMS order, from /proc/net/dev.

    The two header lines are skipped. The name ends at the last colon: old kernels
    print "eth0:123" with no space once the byte count grows wide.
    """
    devices: dict[str, tuple[int, ...]] = {}
    for line in text.splitlines()[2:]:
        name, colon, rest = line.rpartition(":")
        if not colon:
            continue
        fields = rest.split()
        if len(fields) < 16:
            raise ValueError(f"unexpected /proc/net/dev line: {line.strip()!r}")
        devices[name.strip()] = tuple(int(fields[column]) for column in _COLUMNS.values())
    return devices


def _from_psutil() -> dict[str, tuple[int, ...]]:
    # nowrap: psutil adds back what a 32-bit counter lost on wrap-around itself.
    per_nic = psutil.net_io_counters(pernic=True, nowrap=True)
    return {nic: tuple(getattr(c, field) for field in _PSUTIL_FIELDS) for nic, c in per_nic.items()}


class NetdevCollector:
    name = "netdev"

    def __init__(self, config: NetworkConfig, procfs: str = "/proc") -> None:
        self._devices = config.devices
        self._path = under(procfs, "net/dev")
        self._wraps = WrapGuard()

    def read(self) -> dict[str, tuple[int, ...]]:
        """Every interface's counters in STEMS order, kept monotonic across wrap-arounds."""
        if not LINUX:
            return _from_psutil()
        # Every interface goes through the guard, filtered or not, as with psutil.
        return self._wraps.adjust(parse_netdev(read_text(self._path)))

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
