"""The host collector: node_exporter-compatible metrics, one module per subsystem."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric

from tickscope.collectors.base import CollectResult
from tickscope.collectors.host.config import HostConfig
from tickscope.collectors.host.cpu import CPUCollector
from tickscope.collectors.host.diskstats import DiskstatsCollector
from tickscope.collectors.host.filefd import FilefdCollector
from tickscope.collectors.host.filesystem import FilesystemCollector
from tickscope.collectors.host.hwmon import HwmonCollector
from tickscope.collectors.host.loadavg import LoadavgCollector
from tickscope.collectors.host.meminfo import MeminfoCollector
from tickscope.collectors.host.netdev import NetdevCollector
from tickscope.collectors.host.procfile import LINUX
from tickscope.collectors.host.stat import StatCollector

__all__ = ["HostCollector", "HostConfig"]


class Subsystem(Protocol):
    name: str

    def collect(self) -> list[Metric]: ...


class HostCollector:
    """Runs every enabled subsystem in turn; one that fails is left out of the
    snapshot and reported, the others still count (node_exporter's behaviour).

    Each subsystem reads under host.procfs, host.sysfs and host.rootfs: stat,
    netdev and diskstats through psutil, pointed at host.procfs only around their
    psutil calls (collectors/procfs_root.py), so the engine collector waits at
    most for one of those and never for a slow statvfs; the others by explicit
    paths.
    """

    name = "host"

    def __init__(self, config: HostConfig) -> None:
        self.interval = config.interval
        procfs = config.procfs
        parts: list[Subsystem] = [
            CPUCollector(procfs),
            LoadavgCollector(procfs),
            MeminfoCollector(config.meminfo_all_fields, procfs),
            StatCollector(procfs),
        ]
        if LINUX:
            parts.append(FilefdCollector(procfs))
        self._filesystem: FilesystemCollector | None = None
        if config.filesystem.enabled:
            self._filesystem = FilesystemCollector(config.filesystem, procfs, config.rootfs)
            parts.append(self._filesystem)
        if config.disk.enabled:
            parts.append(DiskstatsCollector(config.disk, procfs))
        if config.network.enabled:
            parts.append(NetdevCollector(config.network, procfs))
        if config.hwmon:
            parts.append(HwmonCollector(config.sysfs))
        self._parts = parts

    @property
    def subsystems(self) -> list[str]:
        return [part.name for part in self._parts]

    def collect(self) -> CollectResult:
        families: list[Metric] = []
        errors: list[str] = []
        for part in self._parts:
            try:
                # An empty family would still print HELP and TYPE lines; leave it out.
                families.extend(f for f in part.collect() if f.samples)
            except Exception as exc:
                errors.append(f"host/{part.name}: {type(exc).__name__}: {exc}")
        return CollectResult(families, errors)

    def readiness(self) -> Mapping[str, str | None]:
        return {}

    def status(self) -> dict[str, Any]:
        return {"subsystems": self.subsystems}

    def close(self) -> None:
        if self._filesystem is not None:
            self._filesystem.close()
