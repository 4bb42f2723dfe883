"""Configuration of the host collector.

The include/exclude defaults follow node_exporter's, so that the series tickscope
exports are the ones a node_exporter on the same machine would export, except where
the sidecar's job differs: tmpfs mounts and lo/veth interfaces say nothing about a
trading engine's health and only add series.
"""

from __future__ import annotations

import re

from agent.configtypes import Duration, Regex, StrictModel

# node_exporter 1.8 --collector.filesystem.mount-points-exclude default.
DEFAULT_MOUNT_POINTS_EXCLUDE = (
    r"^/(dev|proc|run/credentials/.+|sys|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)"
)
# node_exporter's --collector.filesystem.fs-types-exclude default, plus tmpfs.
DEFAULT_FS_TYPES_EXCLUDE = (
    r"^(autofs|binfmt_misc|bpf|cgroup2?|configfs|debugfs|devpts|devtmpfs|fusectl|hugetlbfs"
    r"|iso9660|mqueue|nsfs|overlay|proc|procfs|pstore|rpc_pipefs|securityfs|selinuxfs"
    r"|squashfs|sysfs|tmpfs|tracefs)$"
)
# node_exporter's --collector.diskstats.device-exclude default: partitions and
# pseudo devices would double-count the whole-disk figures.
DEFAULT_DISK_DEVICE_EXCLUDE = r"^(z?ram|loop|fd|(h|s|v|xv)d[a-z]|nvme\d+n\d+p)\d+$"
DEFAULT_NETWORK_DEVICE_EXCLUDE = r"^(lo|veth.*)$"


class DeviceFilter(StrictModel):
    """A name is kept when it matches `include` (if set) and does not match `exclude`."""

    include: Regex | None = None
    exclude: Regex | None = None

    def keeps(self, name: str) -> bool:
        if self.include is not None and not self.include.search(name):
            return False
        return not (self.exclude is not None and self.exclude.search(name))


class FilesystemConfig(StrictModel):
    enabled: bool = True
    # How long one statvfs may take before its mount counts as stuck (a hung NFS
    # server): node_exporter's --collector.filesystem.mount-timeout.
    mount_timeout: Duration = 2.0
    mount_points: DeviceFilter = DeviceFilter(exclude=re.compile(DEFAULT_MOUNT_POINTS_EXCLUDE))
    fs_types: DeviceFilter = DeviceFilter(exclude=re.compile(DEFAULT_FS_TYPES_EXCLUDE))


class DiskConfig(StrictModel):
    enabled: bool = True
    devices: DeviceFilter = DeviceFilter(exclude=re.compile(DEFAULT_DISK_DEVICE_EXCLUDE))


class NetworkConfig(StrictModel):
    enabled: bool = True
    devices: DeviceFilter = DeviceFilter(exclude=re.compile(DEFAULT_NETWORK_DEVICE_EXCLUDE))


class HostConfig(StrictModel):
    enabled: bool = True
    # Collection runs on this interval in a worker thread and scrapes read the last
    # snapshot (see docs/architecture.md, "Why collect on an interval").
    interval: Duration = 2.0
    filesystem: FilesystemConfig = FilesystemConfig()
    disk: DiskConfig = DiskConfig()
    network: NetworkConfig = NetworkConfig()
    hwmon: bool = True
    # Export every /proc/meminfo field as node_exporter does, not just the common ones.
    meminfo_all_fields: bool = False
