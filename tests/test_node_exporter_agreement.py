"""tickscope's host metrics against a real node_exporter on the same machine.

The two cannot read /proc at the same instant, so each tickscope reading is
bracketed: node_exporter is scraped (A), then tickscope's snapshot is awaited
until it was taken after A, then node_exporter is scraped again (B). Counters
must lie in [A, B], widened by 1% and one kernel clock tick (10 ms).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator

import pytest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from helpers.binaries import require_binary
from helpers.sidecar import SidecarProcess, StartSidecar, http_get, sample_value

TICK = 0.01


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def node_exporter() -> Iterator[str]:
    binary = require_binary("prometheus-node-exporter")
    port = free_port()
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if http_get(url, timeout=2).status == 200:
                    break
            except OSError:
                pass
            assert proc.poll() is None, "node_exporter exited"
            assert time.monotonic() < deadline, "node_exporter did not come up"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def scrape(url: str) -> dict[str, Metric]:
    return {m.name: m for m in text_string_to_metric_families(http_get(url).text)}


def by_labels(
    family: Metric, *keys: str, sample: str | None = None
) -> dict[tuple[str, ...], float]:
    return {
        tuple(s.labels[k] for k in keys): s.value
        for s in family.samples
        if sample is None or s.name == sample
    }


def bracketed_read(
    ne_url: str, sidecar: SidecarProcess
) -> tuple[dict[str, Metric], dict[str, Metric], dict[str, Metric]]:
    before = scrape(ne_url)
    after_a = time.time()
    deadline = time.monotonic() + 10
    while True:
        ours = sidecar.families()
        done = sample_value(
            ours["tickscope_collect_last_success_timestamp_seconds"], collector="host"
        )
        took = sample_value(ours["tickscope_collect_duration_seconds"], collector="host")
        if done - took > after_a:
            break
        assert time.monotonic() < deadline, "no fresh host snapshot"
        time.sleep(0.05)
    after = scrape(ne_url)
    return before, ours, after


def assert_bracketed(
    name: str, a: dict, t: dict, b: dict, rel: float = 0.01, abs_: float = TICK
) -> None:
    common = set(a) & set(t) & set(b)
    assert common, f"{name}: no common series (node_exporter {sorted(a)}, tickscope {sorted(t)})"
    for key in sorted(common):
        low = a[key] * (1 - rel) - abs_
        high = b[key] * (1 + rel) + abs_
        assert low <= t[key] <= high, f"{name}{key}: tickscope {t[key]} not in [{low}, {high}]"


def test_host_metrics_agree_with_node_exporter(
    start_sidecar: StartSidecar, node_exporter: str
) -> None:
    sidecar = start_sidecar({"host": {"interval": "0.2s"}})
    sidecar.wait_until(lambda: sidecar.get("/readyz").status == 200, what="ready")
    a, t, b = bracketed_read(node_exporter, sidecar)

    # CPU: every cpu/mode node_exporter reports, tickscope reports, within 1%.
    cpu_a = by_labels(a["node_cpu_seconds"], "cpu", "mode")
    cpu_t = by_labels(t["node_cpu_seconds"], "cpu", "mode")
    assert set(cpu_t) == set(cpu_a)
    assert_bracketed(
        "node_cpu_seconds_total", cpu_a, cpu_t, by_labels(b["node_cpu_seconds"], "cpu", "mode")
    )

    # Memory: total exactly, available within 2%.
    assert sample_value(t["node_memory_MemTotal_bytes"]) == sample_value(
        a["node_memory_MemTotal_bytes"]
    )
    avail_a = sample_value(a["node_memory_MemAvailable_bytes"])
    assert sample_value(t["node_memory_MemAvailable_bytes"]) == pytest.approx(avail_a, rel=0.02)
    for field in ("SwapTotal", "Buffers", "Cached"):
        ours = sample_value(t[f"node_memory_{field}_bytes"])
        theirs = sample_value(a[f"node_memory_{field}_bytes"])
        assert ours == pytest.approx(theirs, rel=0.02, abs=4 * 1024 * 1024), field

    # Filesystems: size equal for every mountpoint both report.
    size_t = by_labels(t["node_filesystem_size_bytes"], "mountpoint")
    size_a = by_labels(a["node_filesystem_size_bytes"], "mountpoint")
    common = set(size_t) & set(size_a)
    assert common, (size_t, size_a)
    for key in common:
        assert size_t[key] == size_a[key], key
    # ... and the labels say the same device and type.
    assert {
        k: v
        for k, v in by_labels(
            t["node_filesystem_size_bytes"], "mountpoint", "device", "fstype"
        ).items()
        if k[0] in {c[0] for c in common}
    } == {
        k: v
        for k, v in by_labels(
            a["node_filesystem_size_bytes"], "mountpoint", "device", "fstype"
        ).items()
        if k[0] in {c[0] for c in common}
    }

    # Network: receive bytes within 1% per device both report (lo is left out by tickscope).
    assert_bracketed(
        "node_network_receive_bytes_total",
        by_labels(a["node_network_receive_bytes"], "device"),
        by_labels(t["node_network_receive_bytes"], "device"),
        by_labels(b["node_network_receive_bytes"], "device"),
        abs_=0,
    )
    assert "lo" not in by_labels(t["node_network_receive_bytes"], "device")

    # Disks: the devices node_exporter reports that pass tickscope's default filter agree.
    assert_bracketed(
        "node_disk_read_bytes_total",
        by_labels(a["node_disk_read_bytes"], "device"),
        by_labels(t["node_disk_read_bytes"], "device"),
        by_labels(b["node_disk_read_bytes"], "device"),
        abs_=0,
    )

    # Load and the rest.
    assert sample_value(t["node_load1"]) == pytest.approx(sample_value(a["node_load1"]), abs=0.2)
    assert sample_value(t["node_boot_time_seconds"]) == sample_value(a["node_boot_time_seconds"])
    assert sample_value(t["node_filefd_maximum"]) == sample_value(a["node_filefd_maximum"])
    ctx_a = sample_value(a["node_context_switches"])
    ctx_b = sample_value(b["node_context_switches"])
    assert ctx_a * 0.99 <= sample_value(t["node_context_switches"]) <= ctx_b * 1.01
