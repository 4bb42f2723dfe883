"""Collectors in-process: snapshots, stuck mounts, timeouts, the loop monitor."""

from __future__ import annotations

import asyncio
import os
import shutil
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily

from tickscope.collectors.base import CollectResult
from tickscope.collectors.host import HostCollector
from tickscope.collectors.host.config import FilesystemConfig, HostConfig
from tickscope.collectors.host.filesystem import FilesystemCollector
from tickscope.collectors.metrics import CollectorMetrics
from tickscope.collectors.runner import CollectorRunner
from tickscope.core.health import Health, LoopMonitor

FIXTURE_PROC = Path(__file__).parent / "fixtures" / "proc"
FIXTURE_SYS = Path(__file__).parent / "fixtures" / "sys"


def samples(families: list, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    return {
        tuple(sorted(s.labels.items())): s.value
        for f in families
        for s in f.samples
        if s.name == name
    }


def test_host_collection_is_complete_and_fast_enough_to_run_often() -> None:
    collector = HostCollector(HostConfig())
    try:
        result = collector.collect()
        assert result.errors == []
        names = {f.name for f in result.families}
        for expected in (
            "node_cpu_seconds",
            "node_load1",
            "node_memory_MemTotal_bytes",
            "node_boot_time_seconds",
        ):
            assert expected in names
        assert all(f.samples for f in result.families), "empty families are left out"
    finally:
        collector.close()


def test_a_failing_subsystem_is_left_out_counted_and_the_rest_served(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    shutil.copytree(FIXTURE_PROC, proc)
    (proc / "diskstats").unlink()
    config = HostConfig.model_validate(
        {"procfs": str(proc), "sysfs": str(FIXTURE_SYS), "filesystem": {"enabled": False}}
    )

    async def scenario() -> None:
        registry = CollectorRegistry()
        metrics = CollectorMetrics(registry, ["host"])
        health = Health()
        runner = CollectorRunner(HostCollector(config), metrics, health, timeout=5.0)
        registry.register(runner.snapshot)
        assert (
            registry.get_sample_value("tickscope_collect_errors_total", {"collector": "host"}) == 0
        )
        assert await runner.collect_once()
        assert (
            registry.get_sample_value("tickscope_collect_errors_total", {"collector": "host"}) == 1
        )
        # The snapshot is published without the disks, and the collector counts as ready.
        assert registry.get_sample_value("node_disk_read_bytes_total", {"device": "sda"}) is None
        assert registry.get_sample_value("node_load1") == 0.52
        assert registry.get_sample_value("node_memory_MemTotal_bytes") == 16303428 * 1024
        assert (
            registry.get_sample_value("node_network_receive_bytes_total", {"device": "eth0"})
            == 9876543210
        )
        assert health.ready
        # Every collection that fails a part counts again.
        assert await runner.collect_once()
        assert (
            registry.get_sample_value("tickscope_collect_errors_total", {"collector": "host"}) == 2
        )
        await runner.stop()

    asyncio.run(scenario())


def test_a_stuck_mount_is_reported_and_skipped_until_it_answers(tmp_path: Path) -> None:
    (tmp_path / "self").mkdir()
    (tmp_path / "self" / "mounts").write_text(
        "nfs:/export /mnt/hung nfs4 rw 0 0\n"
        "/dev/root / ext4 ro,relatime 0 0\n"
        "/dev/other / ext4 rw 0 0\n"  # mounted over the first: only this one counts
    )
    release = threading.Event()
    root = os.statvfs("/")
    calls: list[str] = []

    def statvfs(path: str) -> os.statvfs_result:
        calls.append(path)
        if path == "/mnt/hung":
            release.wait(30)
        return root

    fs = FilesystemCollector(FilesystemConfig(mount_timeout=0.2), str(tmp_path), statvfs=statvfs)
    try:
        started = time.monotonic()
        families = fs.collect()
        assert 0.2 <= time.monotonic() - started < 2
        errors = samples(families, "node_filesystem_device_error")
        assert errors == {
            (("device", "nfs:/export"), ("fstype", "nfs4"), ("mountpoint", "/mnt/hung")): 1.0,
            (("device", "/dev/other"), ("fstype", "ext4"), ("mountpoint", "/")): 0.0,
        }
        assert samples(families, "node_filesystem_readonly") == {
            (("device", "/dev/other"), ("fstype", "ext4"), ("mountpoint", "/")): 0.0
        }
        assert list(samples(families, "node_filesystem_size_bytes").values()) == [
            root.f_blocks * root.f_bsize
        ]

        # While it is stuck, the mount costs nothing: no new call, no new wait.
        calls.clear()
        started = time.monotonic()
        families = fs.collect()
        assert time.monotonic() - started < 0.15
        assert calls == ["/"]
        assert 1.0 in samples(families, "node_filesystem_device_error").values()

        release.set()
        deadline = time.monotonic() + 5
        while 1.0 in samples(fs.collect(), "node_filesystem_device_error").values():
            assert time.monotonic() < deadline, "mount never recovered"
            time.sleep(0.05)
    finally:
        release.set()
        fs.close()


class FakeSource:
    name = "fake"

    def __init__(
        self, interval: float, block: threading.Event | None = None, takes: float = 0.0
    ) -> None:
        self.interval = interval
        self.block = block
        self.takes = takes
        self.calls = 0

    def collect(self) -> CollectResult:
        self.calls += 1
        time.sleep(self.takes)
        if self.block is not None:
            self.block.wait(30)
        return CollectResult(
            [GaugeMetricFamily("fake_value", "A value.", value=self.calls)],
            ["partial: one part failed"],
        )

    def readiness(self) -> Mapping[str, str | None]:
        return {"fake:thing": None if self.calls > 1 else "thing not there yet"}

    def status(self) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass


def test_runner_publishes_counts_errors_and_sets_readiness() -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        metrics = CollectorMetrics(registry, ["fake"])
        health = Health()
        runner = CollectorRunner(FakeSource(interval=1.0, takes=0.05), metrics, health, timeout=1.0)
        registry.register(runner.snapshot)
        assert not health.ready
        assert await runner.collect_once()
        assert registry.get_sample_value("fake_value") == 1
        assert (
            registry.get_sample_value("tickscope_collect_errors_total", {"collector": "fake"}) == 1
        )
        # The source sleeps 50 ms: the duration is the collection's own time, not 0
        # and not the interval.
        duration = registry.get_sample_value(
            "tickscope_collect_duration_seconds", {"collector": "fake"}
        )
        assert duration is not None and 0.05 <= duration < 0.5
        reasons = {c.name: c.reason for c in health.conditions}
        assert reasons == {"collector:fake": "", "fake:thing": "thing not there yet"}
        assert await runner.collect_once()
        assert health.ready and registry.get_sample_value("fake_value") == 2
        await runner.stop()

    asyncio.run(scenario())


def test_runner_times_out_a_stuck_collection_and_stops_serving_old_data() -> None:
    async def scenario() -> None:
        registry = CollectorRegistry()
        metrics = CollectorMetrics(registry, ["fake"])
        block = threading.Event()
        source = FakeSource(interval=0.05, block=block)
        runner = CollectorRunner(source, metrics, Health(), timeout=0.1)
        registry.register(runner.snapshot)
        block.set()
        assert await runner.collect_once()
        assert registry.get_sample_value("fake_value") == 1
        block.clear()
        started = time.monotonic()
        assert not await runner.collect_once()  # times out, the loop is not held
        assert time.monotonic() - started < 0.5
        # The worker is still stuck: the next attempt fails at once instead of queueing.
        assert not await runner.collect_once()
        assert source.calls == 2
        errors = registry.get_sample_value("tickscope_collect_errors_total", {"collector": "fake"})
        assert errors == 1 + 2  # one partial error from the first collection, two failures
        # Older than 3 intervals + timeout: not served any more.
        await asyncio.sleep(runner.snapshot.max_age + 0.05)
        assert registry.get_sample_value("fake_value") is None
        block.set()
        await asyncio.sleep(0.05)
        assert await runner.collect_once()
        assert registry.get_sample_value("fake_value") == 3
        await runner.stop()

    asyncio.run(scenario())


def test_loop_monitor_sees_a_blocked_loop() -> None:
    async def scenario() -> None:
        monitor = LoopMonitor(period=0.05)
        await monitor.start()
        await asyncio.sleep(0.2)
        assert monitor.lag < 0.05
        time.sleep(0.4)  # noqa: ASYNC251 - blocking the loop is the point
        # Seen even before the heartbeat task gets to run again.
        assert monitor.lag >= 0.3
        await asyncio.sleep(0.2)
        assert monitor.lag < 0.05  # it recovers once the loop turns again
        await monitor.stop()

    asyncio.run(scenario())
