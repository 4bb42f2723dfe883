"""node_filesystem_* for mounted filesystems, with node_exporter's stuck-mount guard.

statvfs on a hung network filesystem never returns. Each call therefore runs in a
daemon worker and is waited for at most `mount_timeout`; a mount that did not
answer is reported with node_filesystem_device_error 1 and skipped until its
call returns, and the worker it blocked is abandoned for a fresh one. One bad
mount thus costs one timeout once, not every collection.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import TimeoutError as FutureTimeout

import psutil
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.host.config import FilesystemConfig
from tickscope.collectors.worker import DaemonWorker

__all__ = ["FilesystemCollector"]

log = logging.getLogger("tickscope.collector.filesystem")

_LABELS = ["device", "fstype", "mountpoint"]


class FilesystemCollector:
    name = "filesystem"

    def __init__(self, config: FilesystemConfig) -> None:
        self._config = config
        self._timeout = config.mount_timeout
        self._worker = DaemonWorker("statvfs")
        self._stuck: set[str] = set()
        self._lock = threading.Lock()

    def close(self) -> None:
        self._worker.stop()

    def mounts(self) -> list[tuple[str, str, str, bool]]:
        """(device, fstype, mountpoint, read-only) for every mount the filters keep."""
        kept: dict[str, tuple[str, str, str, bool]] = {}
        for part in psutil.disk_partitions(all=True):
            if not self._config.fs_types.keeps(part.fstype):
                continue
            if not self._config.mount_points.keeps(part.mountpoint):
                continue
            readonly = "ro" in part.opts.split(",")
            # A later mount on the same point hides the earlier one, and statvfs
            # sees only the top one: report that, once.
            kept[part.mountpoint] = (part.device, part.fstype, part.mountpoint, readonly)
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
        future = worker.submit(lambda: os.statvfs(mountpoint))
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
