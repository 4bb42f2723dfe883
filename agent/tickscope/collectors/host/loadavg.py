"""node_load1, node_load5, node_load15."""

from __future__ import annotations

import os

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

__all__ = ["LoadavgCollector"]


class LoadavgCollector:
    name = "loadavg"

    def collect(self) -> list[Metric]:
        one, five, fifteen = os.getloadavg()
        return [
            GaugeMetricFamily("node_load1", "1m load average.", value=one),
            GaugeMetricFamily("node_load5", "5m load average.", value=five),
            GaugeMetricFamily("node_load15", "15m load average.", value=fifteen),
        ]
