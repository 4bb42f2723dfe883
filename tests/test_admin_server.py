"""The real sidecar process, scraped over HTTP on 127.0.0.1."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.binaries import promtool_check_metrics
from helpers.contract import (
    ENGINE_COUNTERS,
    ENGINE_GAUGES,
    HOST_COUNTERS,
    HOST_GAUGES,
    HOST_SENSORS,
    SELF_COUNTERS,
    SELF_GAUGES,
)
from helpers.sidecar import SidecarProcess, StartSidecar, gunzip, sample_value

ENGINE_LIMITS = {"ENGINE_MEMORY_LIMIT": "536870912", "ENGINE_CPU_LIMIT": "1500"}


@pytest.fixture
def engine_child() -> subprocess.Popen[bytes]:
    marker = f"tickscope-test-engine-{time.monotonic_ns()}"
    proc = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; time.sleep(600)", marker],
        stdin=subprocess.DEVNULL,
    )
    proc.marker = marker  # type: ignore[attr-defined]
    yield proc
    proc.kill()
    proc.wait(5)


@pytest.fixture
def sidecar(start_sidecar: StartSidecar, engine_child: subprocess.Popen[bytes]) -> SidecarProcess:
    marker = engine_child.marker  # type: ignore[attr-defined]
    s = start_sidecar(
        {
            "engine": {
                "processes": [
                    {"name": "engine", "cmdline": re.escape(marker), "cpu_limit_divisor": "1m"}
                ]
            }
        },
        env=ENGINE_LIMITS,
    )
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready")
    return s


def _check_types(families: dict, gauges: list[str], counters: list[str]) -> None:
    for name in gauges:
        assert name in families, f"{name} missing"
        assert families[name].type == "gauge", (name, families[name].type)
        assert families[name].samples, f"{name} has no samples"
    for name in counters:
        assert name in families, f"{name} missing"
        assert families[name].type == "counter", (name, families[name].type)
        assert families[name].samples, f"{name} has no samples"


def test_every_contract_metric_is_present_with_its_type(sidecar: SidecarProcess) -> None:
    families = sidecar.families()
    _check_types(
        families,
        HOST_GAUGES + ENGINE_GAUGES + SELF_GAUGES,
        HOST_COUNTERS + ENGINE_COUNTERS + SELF_COUNTERS,
    )
    if psutil.sensors_temperatures():
        _check_types(families, HOST_SENSORS, [])
    else:
        assert not any(n.startswith("node_hwmon") for n in families)
    # The engine's figures are really the child's.
    assert sample_value(families["engine_process_up"], process="engine") == 1
    assert (
        sample_value(families["engine_container_memory_limit_bytes"], process="engine") == 536870912
    )
    assert sample_value(families["engine_container_cpu_limit_cores"], process="engine") == 1.5
    modes = {s.labels["mode"] for s in families["engine_process_cpu_seconds"].samples}
    assert modes == {"user", "system"}
    cpu_modes = {s.labels["mode"] for s in families["node_cpu_seconds"].samples}
    assert cpu_modes == {"user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal"}
    cpus = {s.labels["cpu"] for s in families["node_cpu_seconds"].samples}
    assert cpus == {str(i) for i in range(psutil.cpu_count())}
    errors = families["tickscope_collect_errors"]
    assert {s.labels["collector"] for s in errors.samples} == {"host", "engine_process"}
    assert all(s.value == 0 for s in errors.samples), errors.samples
    info = families["tickscope_build_info"].samples[0]
    assert info.value == 1 and info.labels["version"]


def test_openmetrics_is_negotiated(sidecar: SidecarProcess) -> None:
    families = sidecar.families(openmetrics=True)
    assert families["node_cpu_seconds"].type == "counter"
    assert families["engine_process_up"].type == "gauge"
    r = sidecar.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert r.text.endswith("# EOF\n")
    plain = sidecar.get("/metrics", {"Accept": "text/plain"})
    assert plain.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert "# EOF" not in plain.text


def test_prometheus_accept_header_gets_openmetrics_gzipped(sidecar: SidecarProcess) -> None:
    # What Prometheus 2.x sends on every scrape.
    r = sidecar.get(
        "/metrics",
        {
            "Accept": "application/openmetrics-text;version=1.0.0,application/openmetrics-text;"
            "version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
            "Accept-Encoding": "gzip",
        },
    )
    assert r.status == 200
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["content-type"].startswith("application/openmetrics-text")
    assert b"node_cpu_seconds_total" in gunzip(r.body)


def test_name_filter(sidecar: SidecarProcess) -> None:
    r = sidecar.get("/metrics?name[]=node_load1&name[]=engine_process_restarts_total")
    names = {m.name for m in text_string_to_metric_families(r.text)}
    assert names == {"node_load1", "engine_process_restarts"}


def test_promtool_finds_no_problems_beyond_node_exporter_naming(sidecar: SidecarProcess) -> None:
    unexpected, returncode = promtool_check_metrics(sidecar.metrics_text())
    assert unexpected == [], unexpected
    assert returncode in (0, 3)  # 3 = lint findings, all of them the allowed kind
    # A metric promtool would flag (counter without _total) does make it fail: the check is live.
    bad, returncode = promtool_check_metrics(
        "# HELP x_requests A counter.\n# TYPE x_requests counter\nx_requests 1\n"
    )
    assert bad and returncode != 0


def test_healthz_readyz_and_status_page(sidecar: SidecarProcess) -> None:
    health = sidecar.get("/healthz")
    assert health.status == 200 and health.json()["status"] == "ok"
    ready = sidecar.get("/readyz")
    assert ready.status == 200
    checks = {c["name"]: c["ready"] for c in ready.json()["checks"]}
    assert checks == {
        "admin_server": True,
        "collector:host": True,
        "collector:engine_process": True,
        "engine:engine": True,
        "receiver:otlp_http": True,
        "receiver:otlp_grpc": True,
    }
    page = sidecar.get("/")
    assert page.status == 200 and page.headers["content-type"].startswith("text/plain")
    assert re.search(r"^tickscope \S+$", page.text, re.M)
    assert re.search(r"^  host +every 0\.5s +last took [\d.]+ ms", page.text, re.M), page.text
    assert re.search(r"^  engine +up, pid \d+ +restarts 0", page.text, re.M), page.text
    status = sidecar.get("/?format=json").json()
    assert status["ready"] is True
    assert {c["name"] for c in status["collectors"]} == {"host", "engine_process"}
    assert status["engine_processes"][0]["up"] is True
    assert sidecar.get("/nope").status == 404


def test_sigterm_stops_gracefully(sidecar: SidecarProcess) -> None:
    assert sidecar.proc is not None
    started = time.monotonic()
    sidecar.proc.send_signal(signal.SIGTERM)
    assert sidecar.proc.wait(10) == 0
    assert time.monotonic() - started < 5
    sidecar.wait_for_log("tickscope stopped")


def test_logs_are_json_lines(sidecar: SidecarProcess) -> None:
    started = sidecar.wait_for_log("tickscope started")
    assert started["level"] == "info" and started["logger"] == "tickscope"
    assert started["collectors"] == ["host", "engine_process"]
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$", started["ts"])
    assert all(line.startswith("{") for line in sidecar.raw_stderr), sidecar.raw_stderr
