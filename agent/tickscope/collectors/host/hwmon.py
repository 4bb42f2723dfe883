"""node_hwmon_temp_celsius and its limits, from /sys/class/hwmon.

Labels: `chip` is the hwmon driver's name (the chip's `name` file, what
node_exporter puts in node_hwmon_chip_names' chip_name), `sensor` the sensor's
label (tempN_label) or else its file stem, tempN (node_exporter's `sensor`).
Containers and most VMs have no sensors: then this collector exports nothing.

The files are read directly, not through psutil.sensors_temperatures(), whose
semantics differ (psutil 7.2): it globs the hard-coded /sys/class/hwmon and
/sys/class/thermal, whatever host.sysfs says (psutil has no sysfs root), and it
copies max into crit and crit into max where a chip has only one, so it would
export limits the chip does not have.

The sensors are found the way psutil finds them, but under host.sysfs:
class/hwmon/hwmon*/temp* and hwmon*/device/temp*, and, on a machine with no
hwmon sensor at all, the thermal zones. (psutil also globs coretemp's platform
devices, but builds paths from them that never open; they are linked from
class/hwmon anyway.)
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from typing import NamedTuple

import psutil
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.procfile import LINUX, read_text, under

__all__ = ["HwmonCollector", "Sensor", "read_sensors"]


class Sensor(NamedTuple):
    name: str  # the label, else tempN; "" for a thermal zone
    current: float
    high: float | None
    critical: float | None


def _millidegrees(path: str) -> float | None:
    """A temperature file's value in degrees, or None if it is absent or not a number.

    sysfs files fail in every way (EIO from a sleeping device, ENODATA, garbage):
    a sensor that cannot be read is skipped rather than failing the others.
    """
    try:
        return float(read_text(path).strip()) / 1000.0
    except (OSError, ValueError):
        return None


def _optional_text(path: str) -> str:
    try:
        return read_text(path).strip()
    except OSError:
        return ""


def _hwmon_bases(sysfs: str) -> list[str]:
    """Every tempN path prefix (".../hwmon0/temp1"), sorted."""
    found = glob.glob(under(sysfs, "class/hwmon/hwmon*/temp*_*"))
    # Some drivers (CentOS kernels) put the files one directory further down.
    found += glob.glob(under(sysfs, "class/hwmon/hwmon*/device/temp*_*"))
    return sorted({_stem(path) for path in found})


def _stem(path: str) -> str:
    """ ".../hwmon0/temp1_input" -> ".../hwmon0/temp1"."""
    directory, name = os.path.split(path)
    return os.path.join(directory, name.split("_", 1)[0])


def read_sensors(sysfs: str = "/sys") -> dict[str, list[Sensor]]:
    """Chip name -> its temperature sensors, in degrees Celsius.

    A limit is reported only where the chip has the file: psutil copied max into
    crit (and crit into max) where only one exists, which node_exporter does not.
    """
    chips: defaultdict[str, list[Sensor]] = defaultdict(list)
    bases = _hwmon_bases(sysfs)
    for base in bases:
        current = _millidegrees(base + "_input")
        try:
            chip = read_text(os.path.join(os.path.dirname(base), "name")).strip()
        except OSError:
            continue
        if current is None:
            continue
        label = _optional_text(base + "_label") or os.path.basename(base)
        chips[chip].append(
            Sensor(label, current, _millidegrees(base + "_max"), _millidegrees(base + "_crit"))
        )
    if bases:
        return dict(chips)
    for zone in sorted(glob.glob(under(sysfs, "class/thermal/thermal_zone*"))):
        current = _millidegrees(os.path.join(zone, "temp"))
        try:
            chip = read_text(os.path.join(zone, "type")).strip()
        except OSError:
            continue
        if current is None:
            continue
        limits: dict[str, float | None] = {"high": None, "critical": None}
        for trip in sorted(glob.glob(os.path.join(zone, "trip_point_*_type"))):
            kind = _optional_text(trip)
            if kind in limits:
                limits[kind] = _millidegrees(trip[: -len("_type")] + "_temp")
        chips[chip].append(Sensor("", current, limits["high"], limits["critical"]))
    return dict(chips)


def _from_psutil() -> dict[str, list[Sensor]]:
    read = getattr(psutil, "sensors_temperatures", None)
    if read is None:  # platforms psutil has no sensors for
        return {}
    return {
        chip: [Sensor(s.label, s.current, s.high, s.critical) for s in sensors]
        for chip, sensors in read().items()
    }


class HwmonCollector:
    name = "hwmon"

    def __init__(self, sysfs: str = "/sys") -> None:
        self._sysfs = sysfs

    def collect(self) -> list[Metric]:
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
        chips = read_sensors(self._sysfs) if LINUX else _from_psutil()
        seen: set[tuple[str, str]] = set()
        for chip, sensors in sorted(chips.items()):
            for index, sensor in enumerate(sensors, start=1):
                name = sensor.name or f"temp{index}"
                # Two chips of one driver (two NVMe drives) are one list, and both
                # have a "Composite": keep both, distinctly.
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
