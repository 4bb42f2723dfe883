"""node_network_* from /proc/net/dev (through psutil), per interface."""

from __future__ import annotations

import psutil
from prometheus_client.core import CounterMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.config import NetworkConfig

__all__ = ["NetdevCollector"]

# (node_exporter name stem, psutil field)
_FIELDS = (
    ("receive_bytes", "bytes_recv"),
    ("transmit_bytes", "bytes_sent"),
    ("receive_packets", "packets_recv"),
    ("transmit_packets", "packets_sent"),
    ("receive_errs", "errin"),
    ("transmit_errs", "errout"),
    ("receive_drop", "dropin"),
    ("transmit_drop", "dropout"),
)


class NetdevCollector:
    name = "netdev"

    def __init__(self, config: NetworkConfig) -> None:
        self._devices = config.devices

    def collect(self) -> list[Metric]:
        families = [
            (
                CounterMetricFamily(
                    f"node_network_{stem}",
                    f"Network device statistic {stem}.",
                    labels=["device"],
                ),
                field,
            )
            for stem, field in _FIELDS
        ]
        per_nic = psutil.net_io_counters(pernic=True, nowrap=True)
        for device, c in sorted(per_nic.items()):
            if not self._devices.keeps(device):
                continue
            for family, field in families:
                family.add_metric([device], getattr(c, field))
        return [family for family, _ in families]
