"""node_filesystem_* for mounted filesystems, with node_exporter's stuck-mount guard.

statvfs on a hung network filesystem never returns. Each call therefore runs in a
daemon worker and is waited for at most `mount_timeout`; a mount that did not
answer is reported with node_filesystem_device_error 1 and skipped until its
call returns, and the worker it blocked is abandoned for a fresh one. One bad
mount thus costs one timeout once, not every collection.

The mounts are those of the sidecar's own mount table, {procfs}/self/mounts (what
/etc/mtab links to). With host.rootfs set to where the node's / is mounted in the
container, only the mounts at or under it are reported, with mount points as the
node sees them, and statvfs runs at rootfs + mount point: node_exporter's
--path.rootfs.

Both are read directly rather than through psutil, whose semantics differ
(psutil 7.2): disk_usage() multiplies block counts by f_frsize where
node_exporter uses f_bsize, and has no inode counts;
disk_partitions() reads /etc/mtab whenever PROCFS_PATH is /proc, reports the
device "none" as "" and replaces "/dev/root" with the disk it finds behind it,
where node_exporter reports what the kernel's table says.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import TimeoutError as FutureTimeout
from typing import NamedTuple

import psutil
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.config import FilesystemConfig
from tickscope.collectors.host.procfile import LINUX, read_text, under
from tickscope.collectors.worker import DaemonWorker

__all__ = ["FilesystemCollector", "Mount", "parse_mounts", "relative_to_root"]

log = logging.getLogger("tickscope.collector.filesystem")

_LABELS = ["device", "fstype", "mountpoint"]

# The kernel writes a space, tab, newline or backslash in a mounts field as an
# octal escape (\040); getmntent(3) and node_exporter decode them.
_OCTAL = re.compile(r"\\([0-7]{3})")


class Mount(NamedTuple):
    device: str
    mountpoint: str
    fstype: str
    options: str


def _unescape(field: str) -> str:
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def parse_mounts(text: str) -> list[Mount]:
    """The entries of a mounts file (/proc/self/mounts, fstab(5) format), in order.

    The device is reported as the kernel writes it, "none" and "/dev/root"
    included, as node_exporter does (psutil, which read the table before, turned
    "none" into "" and looked up the disk behind "/dev/root").
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 4:
            continue
        device, mountpoint, fstype, options = (_unescape(f) for f in fields[:4])
        mounts.append(Mount(device, mountpoint, fstype, options))
    return mounts


def relative_to_root(mountpoint: str, rootfs: str) -> str | None:
    """`mountpoint` as seen from inside `rootfs`, or None when it lies outside."""
    if rootfs == "/":
        return mountpoint
    if mountpoint == rootfs:
        return "/"
    if mountpoint.startswith(rootfs + "/"):
        return mountpoint[len(rootfs) :]
    return None


def _from_psutil() -> list[Mount]:
    return [
        Mount(p.device, p.mountpoint, p.fstype, p.opts) for p in psutil.disk_partitions(all=True)
    ]


class FilesystemCollector:
    name = "filesystem"

    def __init__(
        self,
        config: FilesystemConfig,
        procfs: str = "/proc",
        rootfs: str = "/",
        statvfs: Callable[[str], os.statvfs_result] = os.statvfs,
    ) -> None:
        self._config = config
        self._mounts_path = under(procfs, "self/mounts")
        self._rootfs = rootfs
        # Replaceable so that tests can give every mount of a fixture table exact figures.
        self._statvfs_call = statvfs
        self._timeout = config.mount_timeout
        self._worker = DaemonWorker("statvfs")
        self._stuck: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._worker.stop()

    def mounts(self) -> list[tuple[str, str, str, bool]]:
        """(device, fstype, mountpoint, read-only) for every mount the filters keep."""
        table = parse_mounts(read_text(self._mounts_path)) if LINUX else _from_psutil()
        kept: dict[str, tuple[str, str, str, bool]] = {}
        for mount in table:
            mountpoint = relative_to_root(mount.mountpoint, self._rootfs)
            if mountpoint is None:  # the container's own mounts, beside the node's root
                continue
            if not self._config.fs_types.keeps(mount.fstype):
                continue
            if not self._config.mount_points.keeps(mountpoint):
                continue
            readonly = "ro" in mount.options.split(",")
            # A later mount on the same point hides the earlier one, and statvfs
            # sees only the top one: report that, once.
            kept[mountpoint] = (mount.device, mount.fstype, mountpoint, readonly)
        return list(kept.values())

    def collect(self) -> list[Metric]:
        def gauge(stem: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"node_filesystem_{stem}", doc, labels=_LABELS)

        size = gauge("size_bytes", "Filesystem size in bytes.")
        free = gauge("free_bytes", "Filesystem free space in bytes.")
        avail = gauge("avail_bytes", "Filesystem space available to non-root users in bytes.")
        files = gauge("files", "Filesystem total file nodes.")
        files_free = gauge("files_free", "Filesystem total free file nodes.")
        readonly = gauge("readonly", "Filesystem read-only status.")
        device_error = gauge(
            "device_error",
            "Whether an error occurred while getting statistics for the given device.",
        )
        for device, fstype, mountpoint, ro in self.mounts():
            labels = [device, fstype, mountpoint]
            st = self._statvfs(mountpoint)
            if st is None:
                device_error.add_metric(labels, 1)
                continue
            device_error.add_metric(labels, 0)
            # node_exporter multiplies block counts by f_bsize; so do we, so that
            # the two agree exactly on every filesystem.
            size.add_metric(labels, st.f_blocks * st.f_bsize)
            free.add_metric(labels, st.f_bfree * st.f_bsize)
            avail.add_metric(labels, st.f_bavail * st.f_bsize)
            files.add_metric(labels, st.f_files)
            files_free.add_metric(labels, st.f_ffree)
            readonly.add_metric(labels, 1 if ro else 0)
        return [size, free, avail, files, files_free, readonly, device_error]

    def _statvfs(self, mountpoint: str) -> os.statvfs_result | None:
        with self._lock:
            if mountpoint in self._stuck:
                return None
            worker = self._worker
        path = under(self._rootfs, mountpoint)
        future = worker.submit(lambda: self._statvfs_call(path))
        try:
            return future.result(timeout=self._timeout)
        except FutureTimeout:
            with self._lock:
                self._stuck.add(mountpoint)
                worker.stop()
                self._worker = DaemonWorker("statvfs")
            log.warning(
                "statvfs did not return; skipping the mount until it does",
                extra={"mountpoint": mountpoint, "timeout_seconds": self._timeout},
            )
            future.add_done_callback(lambda _: self._unstick(mountpoint))
            return None
        except OSError as exc:
            log.debug("statvfs failed", extra={"mountpoint": mountpoint, "error": str(exc)})
            return None

    def _unstick(self, mountpoint: str) -> None:
        with self._lock:
            self._stuck.discard(mountpoint)
        log.info("mount answers again", extra={"mountpoint": mountpoint})
