"""node_hwmon_temp_celsius and its limits, from psutil's sensor readings.

Labels: `chip` is the hwmon driver's name (what node_exporter puts in
node_hwmon_chip_names' chip_name), `sensor` the sensor's label or tempN.
Containers and most VMs have no sensors: then this collector exports nothing.
"""

from __future__ import annotations

import psutil
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

__all__ = ["HwmonCollector"]


class HwmonCollector:
    name = "hwmon"

    def collect(self) -> list[Metric]:
        read = getattr(psutil, "sensors_temperatures", None)
        if read is None:  # platforms psutil has no sensors for
            return []
        temp = GaugeMetricFamily(
            "node_hwmon_temp_celsius",
            "Hardware monitor for temperature (input)",
            labels=["chip", "sensor"],
        )
        crit = GaugeMetricFamily(
            "node_hwmon_temp_crit_celsius",
            "Hardware monitor for temperature (crit)",
            labels=["chip", "sensor"],
        )
        high = GaugeMetricFamily(
            "node_hwmon_temp_max_celsius",
            "Hardware monitor for temperature (max)",
            labels=["chip", "sensor"],
        )
        seen: set[tuple[str, str]] = set()
        for chip, sensors in sorted(read().items()):
            for index, sensor in enumerate(sensors, start=1):
                name = sensor.label or f"temp{index}"
                # psutil merges chips of the same driver name into one list, so
                # two NVMe drives both report "Composite": keep both, distinctly.
                key, suffix = (chip, name), 2
                while key in seen:
                    key = (chip, f"{name}_{suffix}")
                    suffix += 1
                seen.add(key)
                labels = list(key)
                temp.add_metric(labels, sensor.current)
                if sensor.critical is not None:
                    crit.add_metric(labels, sensor.critical)
                if sensor.high is not None:
                    high.add_metric(labels, sensor.high)
        if not seen:
            return []
        return [temp, crit, high]
