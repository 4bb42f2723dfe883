"""End to end: an engine process using `shim.configure` and real ccxt (sync and
async) -> the real OTLP exporters -> the running sidecar -> /metrics."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from typing import Any

import pytest

from helpers.sidecar import ROOT, SidecarProcess, StartSidecar, sample_value
from helpers.spanmetrics import calls as span_calls

ENGINE = ROOT / "tests" / "engines" / "shim_engine.py"


def run_engine(
    simulator: Any, env: dict[str, str], *args: str, timeout: float = 60
) -> dict[str, Any]:
    full = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    full.update(env)
    result = subprocess.run(
        [sys.executable, str(ENGINE), "--exchange-url", simulator.url, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    report["stderr"] = result.stderr
    return report


@pytest.fixture(scope="module")
def sidecar(start_module_sidecar: StartSidecar) -> SidecarProcess:
    s = start_module_sidecar({"host": {"enabled": False}})
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready")
    return s


def assert_counts(s: SidecarProcess, service: str, calls: dict[str, int]) -> None:
    total = sum(calls.values()) + 1  # and the engine's one strategy.step span
    families = s.families_when(
        lambda f: span_calls(f, service) >= total, f"{total} spans from {service}", timeout=20
    )
    assert span_calls(families, service) == total
    for method, count in calls.items():
        assert (
            span_calls(
                families,
                service,
                span_name=f"ccxt.{method}",
                method=method,
                exchange="binance",
                span_kind="SPAN_KIND_CLIENT",
                status_code="STATUS_CODE_UNSET",
                error_type="",
            )
            == count
        ), method
    # Trading metrics from the same spans: every order accepted.
    orders = families.get("trading_orders")
    if "create_order" in calls:
        assert (
            sample_value(orders, exchange="binance", side="buy", type="limit", outcome="accepted")
            >= calls["create_order"]
        )
    ratio = families["exchange_rate_limit_used_ratio"]
    assert 0 < sample_value(ratio, exchange="binance") <= 1


def test_sync_and_async_engine_over_http(sidecar: SidecarProcess, simulator: Any) -> None:
    report = run_engine(
        simulator,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": sidecar.otlp_http_url},
        "--service",
        "e2e-http",
        "--mode",
        "both",
        "--rounds",
        "5",
    )
    assert report["calls"] == {
        "load_markets": 2,
        "fetch_ticker": 10,
        "fetch_order_book": 5,
        "create_order": 5,
        "cancel_order": 5,
        "fetch_balance": 5,
    }
    assert report["dropped"] == 0
    assert_counts(sidecar, "e2e-http", report["calls"])


def test_engine_helpers_and_runtime_metrics_reach_the_sidecar(
    sidecar: SidecarProcess, simulator: Any
) -> None:
    run_engine(
        simulator,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": sidecar.otlp_http_url},
        "--service", "e2e-helpers", "--mode", "sync", "--rounds", "1",
    )  # fmt: skip
    f = sidecar.families_when(
        lambda f: (
            "engine_cache_lookups" in f
            and any(s.labels.get("job") == "e2e-helpers" for s in f["engine_cache_lookups"].samples)
        ),
        "engine metrics",
    )
    lookups = f["engine_cache_lookups"]
    assert lookups.type == "counter"
    assert (
        sample_value(
            lookups, "engine_cache_lookups_total", job="e2e-helpers", cache="tickers", result="hit"
        )
        == 3
    )
    assert (
        sample_value(
            lookups, "engine_cache_lookups_total", job="e2e-helpers", cache="tickers", result="miss"
        )
        == 2
    )
    assert sample_value(f["engine_queue_depth"], job="e2e-helpers", queue="orders") == 4
    assert (
        span_calls(f, "e2e-helpers", span_name="strategy.step", span_kind="SPAN_KIND_INTERNAL") == 1
    )
    # Runtime metrics, under the names docs/shim.md lists.
    for name, kind in (
        ("cpython_gc_collections", "counter"),
        ("cpython_gc_pause_time_seconds", "counter"),
        ("cpython_gc_tracked_objects", "gauge"),
        ("process_thread_count", "gauge"),
        ("process_memory_usage_bytes", "gauge"),
        ("process_cpu_time_seconds", "counter"),
    ):
        assert f[name].type == kind, name
        assert any(s.labels.get("job") == "e2e-helpers" for s in f[name].samples), name
    assert sample_value(f["process_memory_usage_bytes"], job="e2e-helpers") > 10_000_000
    # The SDK's own processor metrics arrive too: nothing dropped.
    assert "otel_sdk_processor_span_processed" in f


def test_engine_over_grpc(sidecar: SidecarProcess, simulator: Any) -> None:
    report = run_engine(
        simulator,
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://{sidecar.otlp_grpc_target}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        },
        "--service",
        "e2e-grpc",
        "--mode",
        "sync",
        "--rounds",
        "3",
    )
    assert_counts(sidecar, "e2e-grpc", report["calls"])


def test_errors_reach_the_sidecar_as_error_spans(sidecar: SidecarProcess, simulator: Any) -> None:
    simulator.inject(path="depth", status=503, count=None)
    try:
        full = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
        full["OTEL_EXPORTER_OTLP_ENDPOINT"] = sidecar.otlp_http_url
        result = subprocess.run(
            [
                sys.executable,
                str(ENGINE),
                "--exchange-url",
                simulator.url,
                "--service",
                "e2e-errors",
                "--mode",
                "sync",
                "--rounds",
                "1",
            ],
            env=full,
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
    finally:
        simulator.clear_faults()
    assert (
        result.returncode != 0 and "ExchangeNotAvailable" in result.stderr
    )  # the engine saw the error unchanged
    families = sidecar.families_when(
        lambda f: span_calls(f, "e2e-errors", span_name="ccxt.fetch_order_book") >= 1,
        "error span",
        timeout=20,
    )
    assert (
        span_calls(
            families,
            "e2e-errors",
            span_name="ccxt.fetch_order_book",
            status_code="STATUS_CODE_ERROR",
            error_type="ExchangeNotAvailable",
        )
        == 1
    )
    assert (
        sample_value(
            families["exchange_api_errors"],
            exchange="binance",
            method="fetch_order_book",
            error_type="ExchangeNotAvailable",
        )
        >= 1
    )


def test_sidecar_down_the_engine_runs_on_and_every_span_is_accounted_for(
    simulator: Any,
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]  # nothing listens here
    report = run_engine(
        simulator,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{dead}"},
        "--service", "e2e-down", "--mode", "sync", "--rounds", "500",
        "--max-queue-size", "32",
        # The first span's export fails before the first ccxt call: the gate is closed
        # from the first call on, whatever the machine's speed.
        "--flush-first",
    )  # fmt: skip
    calls = sum(report["calls"].values())
    assert calls == 2001  # the engine ran on: every call returned
    attempts = calls + 1  # and the strategy.step span, made before the flush
    # Every span the instrumentation was asked for was made, or skipped by the gate.
    assert report["made"] + report["skipped"] == attempts, report
    # Every span made was dropped by the full queue (counted by the SDK,
    # error.type=queue_full) or handed to the exporter, where it failed.
    assert report["dropped"] + report["handed_over"] == report["made"], report
    # With the gate closed the shim makes one probe span per second (probe_interval)
    # and skips the rest: strategy.step, plus at most one probe per second of calls,
    # plus one for the moment between the gate closing and the calls starting.
    assert report["made"] <= 2 + report["elapsed"], report
