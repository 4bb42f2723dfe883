"""Configuration of the host collector.

The include/exclude defaults follow node_exporter's, so that the series tickscope
exports are the ones a node_exporter on the same machine would export, except where
the sidecar's job differs: tmpfs mounts and lo/veth interfaces say nothing about a
trading engine's health and only add series.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from tickscope.core.configtypes import Duration, Regex, StrictModel

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


def _absolute(path: str) -> str:
    # A relative root would be resolved against whatever directory the sidecar
    # happens to start in; say so at load time instead.
    if not path.startswith("/"):
        raise ValueError(f"must be an absolute path, got {path!r}")
    return os.path.normpath(path)


# A directory the collectors read from, as an absolute path without a trailing slash.
RootPath = Annotated[str, AfterValidator(_absolute)]


class DeviceFilter(StrictModel):
    """A name is kept when it matches `include` (if set) and does not match `exclude`.

    Each filter below is its own class with its own default `exclude`, so that
    setting only `include` keeps the default exclusions instead of dropping them.
    """

    include: Regex | None = Field(None, description="Keep only names matching this regex.")
    exclude: Regex | None = Field(None, description="Drop names matching this regex.")

    def keeps(self, name: str) -> bool:
        if self.include is not None and not self.include.search(name):
            return False
        return not (self.exclude is not None and self.exclude.search(name))


def _exclude(pattern: str, description: str) -> Any:
    # A default is the project's own pattern, written as re.compile (configtypes.Pattern
    # allows it): Python's re is linear on these four (one anchored alternation each, no
    # nested quantifier; 100 kB adversarial names take ~2-3 ms), and the default config
    # then never loads google-re2 (~1.6 MiB of RSS). A pattern from the config file is
    # still a LinearRegex.
    return Field(
        re.compile(pattern), description=f"Drop names matching this regex ({description})."
    )


class MountPointFilter(DeviceFilter):
    exclude: Regex | None = _exclude(DEFAULT_MOUNT_POINTS_EXCLUDE, "node_exporter's default")


class FsTypeFilter(DeviceFilter):
    exclude: Regex | None = _exclude(DEFAULT_FS_TYPES_EXCLUDE, "node_exporter's default and tmpfs")


class DiskDeviceFilter(DeviceFilter):
    exclude: Regex | None = _exclude(DEFAULT_DISK_DEVICE_EXCLUDE, "partitions and pseudo disks")


class NetDeviceFilter(DeviceFilter):
    exclude: Regex | None = _exclude(DEFAULT_NETWORK_DEVICE_EXCLUDE, "loopback and pod veths")


class FilesystemConfig(StrictModel):
    enabled: bool = Field(True, description="Export node_filesystem_*.")
    mount_timeout: Duration = Field(
        2.0,
        description="How long one statvfs may take before its mount counts as stuck (a hung "
        "NFS server) and is skipped until it answers; node_exporter's mount-timeout.",
    )
    mount_points: MountPointFilter = MountPointFilter()
    fs_types: FsTypeFilter = FsTypeFilter()


class DiskConfig(StrictModel):
    enabled: bool = Field(True, description="Export node_disk_* (whole disks, as node_exporter).")
    devices: DiskDeviceFilter = DiskDeviceFilter()


class NetworkConfig(StrictModel):
    enabled: bool = Field(True, description="Export node_network_*.")
    devices: NetDeviceFilter = NetDeviceFilter()


class HostConfig(StrictModel):
    enabled: bool = Field(True, description="Run the host collector.")
    interval: Duration = Field(
        2.0,
        description="Collection interval. Collection runs in a worker thread and scrapes are "
        "served the last snapshot (docs/architecture.md explains why).",
    )
    procfs: RootPath = Field(
        "/proc",
        description="Where the proc filesystem the host metrics come from is mounted: /proc, "
        "or the node's /proc mounted into the container (node_exporter's --path.procfs).",
    )
    sysfs: RootPath = Field(
        "/sys",
        description="Where the sys filesystem is mounted, for node_hwmon_* (node_exporter's "
        "--path.sysfs).",
    )
    rootfs: RootPath = Field(
        "/",
        description="The root node_filesystem_* describes (node_exporter's --path.rootfs): "
        "only mounts at or under it are reported, with mount points relative to it, and "
        "statvfs runs at rootfs + mount point.",
    )
    filesystem: FilesystemConfig = FilesystemConfig()
    disk: DiskConfig = DiskConfig()
    network: NetworkConfig = NetworkConfig()
    hwmon: bool = Field(True, description="Export node_hwmon_temp_celsius where sensors exist.")
    meminfo_all_fields: bool = Field(
        False,
        description="Export every /proc/meminfo field, as node_exporter does, instead of the "
        "contract's and the commonly charted ones.",
    )
