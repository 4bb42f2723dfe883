"""One provider for everything: configure(), `traced` and the ccxt spans with an
engine that has OpenTelemetry of its own, in each order docs/shim.md describes,
and under opentelemetry-instrument. Each case runs in its own process
(tests/engines/two_providers.py) against the simulator and a real sidecar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from helpers.sidecar import ROOT, SidecarProcess, StartSidecar
from helpers.spanmetrics import calls as span_calls

ENGINE = ROOT / "tests" / "engines" / "two_providers.py"
BIN = Path(sys.executable).parent
# strategy.step around load_markets and three fetch_ticker calls.
SPANS = {"strategy.step": 1, "ccxt.load_markets": 1, "ccxt.fetch_ticker": 3}
ENGINE_SPANS = sorted(name for name, n in SPANS.items() for _ in range(n))


@pytest.fixture(scope="module")
def sidecar(start_module_sidecar: StartSidecar) -> SidecarProcess:
    s = start_module_sidecar({"host": {"enabled": False}})
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready")
    return s


def run(
    simulator: Any, case: str, service: str, env: dict[str, str], *args: str, auto: bool = False
) -> dict[str, Any]:
    full = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TICKSCOPE_"))}
    full.update(env)
    command = [sys.executable, str(ENGINE), "--exchange-url", simulator.url]
    if auto:
        command.insert(0, str(BIN / "opentelemetry-instrument"))
    result = subprocess.run(
        [*command, "--case", case, "--service", service, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report: dict[str, Any] = json.loads(result.stdout.strip().splitlines()[-1])
    return report


def messages(report: dict[str, Any], logger: str) -> list[str]:
    return [line["msg"] for line in report["lines"] if line["logger"] == logger]


def assert_at_sidecar(s: SidecarProcess, service: str) -> None:
    total = sum(SPANS.values())
    families = s.families_when(
        lambda f: span_calls(f, service) >= total, f"{total} spans of {service}", timeout=20
    )
    for name, count in SPANS.items():
        assert span_calls(families, service, span_name=name) == count, name
    assert span_calls(families, service) == total  # each span once: no second provider


def received_spans(s: SidecarProcess) -> float:
    return sum(x.value for x in s.families()["tickscope_receiver_received_spans"].samples)


def test_engine_provider_first_configure_adds_the_sidecar_to_it(
    sidecar: SidecarProcess, simulator: Any
) -> None:
    service = "providers-added"
    report = run(simulator, "engine-first", service, {}, "--endpoint", sidecar.otlp_http_url)
    assert report["mode"] == "added"
    assert report["global_is_engines"] and report["global_is_configures"]
    assert report["processor_added"] and report["instrumented"]
    # traced and the ccxt spans all went through the engine's provider ...
    assert report["engine_spans"] == ENGINE_SPANS
    # ... and, through the processor configure() added to it, to the sidecar.
    assert_at_sidecar(sidecar, service)
    [line] = messages(report, "tickscope.shim")
    assert line.startswith("telemetry added to the TracerProvider already set")


def test_engine_provider_first_as_it_is(sidecar: SidecarProcess, simulator: Any) -> None:
    service = "providers-as-is"
    before = received_spans(sidecar)
    report = run(simulator, "engine-first-as-is", service, {}, "--endpoint", sidecar.otlp_http_url)
    assert report["mode"] == "existing"
    assert report["global_is_engines"] and report["global_is_configures"]
    assert not report["processor_added"]
    assert report["engine_spans"] == ENGINE_SPANS
    [line] = messages(report, "tickscope.shim")
    assert line.startswith("using the TracerProvider already set as it is")
    # The engine's provider exports only where the engine said: no span reached the
    # sidecar (the process has exited, its exports are over).
    assert received_spans(sidecar) == before
    assert span_calls(sidecar.families(), service) == 0


def test_configure_first_then_the_engine_provider_is_refused(
    sidecar: SidecarProcess, simulator: Any
) -> None:
    service = "providers-configure-first"
    report = run(simulator, "configure-first", service, {}, "--endpoint", sidecar.otlp_http_url)
    assert report["mode"] == "created"
    assert report["global_is_configures"] and not report["global_is_engines"]
    assert report["engine_spans"] == []  # the engine's provider was never used
    assert any(
        "Overriding of current TracerProvider is not allowed" in m
        for m in messages(report, "opentelemetry.trace")
    )
    assert_at_sidecar(sidecar, service)
    [line] = messages(report, "tickscope.shim")
    assert line == "telemetry configured"


def test_configure_under_opentelemetry_instrument_uses_its_providers(
    sidecar: SidecarProcess, simulator: Any
) -> None:
    service = "providers-auto"
    report = run(
        simulator,
        "auto",
        service,
        {"OTEL_EXPORTER_OTLP_ENDPOINT": sidecar.otlp_http_url, "OTEL_SERVICE_NAME": service},
        auto=True,
    )
    assert report["mode"] == "opentelemetry-instrument"
    assert report["global_is_configures"] and report["instrumented"]
    assert not report["processor_added"]
    assert_at_sidecar(sidecar, service)  # exactly once each: no second exporter
    [line] = messages(report, "tickscope.shim")
    assert line.startswith("telemetry configured by opentelemetry-instrument")
