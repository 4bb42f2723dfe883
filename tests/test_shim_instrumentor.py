"""CcxtInstrumentor keeps OpenTelemetry's BaseInstrumentor contract, is found
through its entry point (as are the distro and the configurator), and uses the
OpenTelemetry API only; the distro's defaults."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import ccxt
import ccxt.async_support as ccxt_async
import pytest
from opentelemetry.instrumentation.dependencies import (
    get_dependency_conflicts,
    get_dist_dependency_conflicts,
)
from opentelemetry.instrumentation.distro import BaseDistro
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.resources import ResourceDetector
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from tickscope import shim
from tickscope.shim import logredact, settings
from tickscope.shim.distro import TickscopeConfigurator, TickscopeDistro
from tickscope.shim.instrumentation import CcxtInstrumentor
from tickscope.shim.resource import TickscopeResourceDetector


@pytest.fixture
def providers() -> Iterator[
    tuple[TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader]
]:
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    yield tracer_provider, exporter, meter_provider, reader
    instrumentor = CcxtInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
    tracer_provider.shutdown()
    meter_provider.shutdown()


def gauge(reader: InMemoryMetricReader, name: str) -> dict[str, float]:
    found: dict[str, float] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == name:
                    for point in metric.data.data_points:
                        found[str(point.attributes.get("exchange.id"))] = point.value
    return found


def test_instrumentation_dependencies() -> None:
    instrumentor = CcxtInstrumentor()
    assert isinstance(instrumentor, BaseInstrumentor)
    assert tuple(instrumentor.instrumentation_dependencies()) == ("ccxt >= 4.3",)
    assert get_dependency_conflicts(instrumentor.instrumentation_dependencies()) is None
    assert get_dependency_conflicts(["ccxt >= 999"]) is not None  # the check can fail


def test_entry_points() -> None:
    def load(group: str, name: str) -> Any:
        [entry] = [e for e in metadata.entry_points(group=group) if e.name == name]
        assert entry.dist is not None and entry.dist.name == "tickscope-shim"
        return entry.load()

    assert load("opentelemetry_instrumentor", "ccxt") is CcxtInstrumentor
    assert issubclass(load("opentelemetry_distro", "tickscope"), BaseDistro)
    assert issubclass(load("opentelemetry_configurator", "tickscope"), _OTelSDKConfigurator)
    assert issubclass(load("opentelemetry_resource_detector", "tickscope"), ResourceDetector)
    assert load("opentelemetry_distro", "tickscope") is TickscopeDistro
    assert load("opentelemetry_configurator", "tickscope") is TickscopeConfigurator
    # The auto-instrumentation checks the distribution's `instruments` extra.
    dist = metadata.distribution("tickscope-shim")
    assert any(
        r.replace(" ", "").startswith("ccxt>=4.3") and "instruments" in r
        for r in dist.requires or []
    )
    assert get_dist_dependency_conflicts(dist) is None


def test_instrument_uses_the_providers_given_and_uninstrument_restores(
    simulator: Any, providers: Any
) -> None:
    tracer_provider, exporter, meter_provider, reader = providers
    gc.collect()  # exchanges of earlier tests, gone but not yet collected, are not counted
    instrumentor = CcxtInstrumentor()
    assert instrumentor is CcxtInstrumentor()  # one per process, as BaseInstrumentor makes it
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    assert instrumentor.is_instrumented_by_opentelemetry
    instrumentor.instrument(tracer_provider=TracerProvider())  # idempotent: ignored
    sync_ex = simulator.point(ccxt.binance(simulator.ccxt_config("k", "s")))
    async_ex = simulator.point(ccxt_async.binance(simulator.ccxt_config("k", "s")))
    assert shim.is_instrumented(sync_ex) and shim.is_instrumented(async_ex)
    sync_ex.load_markets()
    sync_ex.fetch_ticker("BTC/USDT")

    async def scenario() -> None:
        try:
            await async_ex.load_markets()
            await async_ex.fetch_ticker("ETH/USDT")
        finally:
            await async_ex.close()

    asyncio.run(scenario())
    # Every call once, in the provider given (not the second instrument()'s).
    names = sorted(s.name for s in exporter.get_finished_spans())
    assert names == [
        "ccxt.fetch_ticker",
        "ccxt.fetch_ticker",
        "ccxt.load_markets",
        "ccxt.load_markets",
    ]
    assert gauge(reader, "ccxt.exchange.instrumented") == {"binance": 2}
    instrumentor.uninstrument()
    assert not instrumentor.is_instrumented_by_opentelemetry
    # The exchanges it instrumented are restored, and new ones are plain.
    assert not shim.is_instrumented(sync_ex) and not shim.is_instrumented(async_ex)
    assert not shim.is_instrumented(ccxt.binance())
    sync_ex.fetch_ticker("BTC/USDT")
    assert len(exporter.get_finished_spans()) == 4
    assert gauge(reader, "ccxt.exchange.instrumented") == {}
    instrumentor.uninstrument()  # idempotent: nothing to undo
    # And it can instrument again.
    instrumentor.instrument(tracer_provider=tracer_provider, meter_provider=meter_provider)
    again = simulator.point(ccxt.binance(simulator.ccxt_config("k", "s")))
    again.fetch_ticker("BTC/USDT")
    assert [s.name for s in exporter.get_finished_spans()][-1] == "ccxt.fetch_ticker"
    # One span: the markets fetch_ticker loads first are a call inside the call.
    assert len(exporter.get_finished_spans()) == 5


def test_instrument_takes_the_shims_own_options(
    simulator: Any, providers: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracer_provider, exporter, _, _ = providers
    instrumentor = CcxtInstrumentor()
    instrumentor.instrument(
        tracer_provider=tracer_provider, rate_limits={"binance": 1200}, redact_logs=False
    )
    try:
        assert not logredact.is_installed()
        ex = simulator.point(ccxt.binance(simulator.ccxt_config("k", "s")))
        ex.fetch_ticker("BTC/USDT")
    finally:
        instrumentor.uninstrument()
        logredact.set_enabled(None)
        shim.ccxt.set_rate_limits(None)
    # And from the environment, for opentelemetry-instrument, where no code passes them.
    monkeypatch.setenv("TICKSCOPE_SHIM_RATE_LIMITS", "binance=3000, bybit=120,junk")
    assert settings.env_rate_limits() == {"binance": 3000.0, "bybit": 120.0}
    instrumentor.instrument(tracer_provider=tracer_provider)
    ex = simulator.point(ccxt.binance(simulator.ccxt_config("k", "s")))
    ex.fetch_ticker("BTC/USDT")
    limits = [
        s.attributes["trading.ratelimit.limit"]
        for s in exporter.get_finished_spans()
        if s.name == "ccxt.fetch_ticker"
    ]
    assert limits == [1200.0, 3000.0]


def test_the_instrumentation_imports_no_sdk(simulator: Any) -> None:
    # What opentelemetry-instrument loads for the entry point, plus the helpers,
    # used end to end (a ccxt call, a traced block): the SDK is never imported.
    code = f"""
import sys
from tickscope.shim.instrumentation import CcxtInstrumentor
from tickscope.shim import helpers
CcxtInstrumentor().instrument()
sys.path.insert(0, {str(simulator_examples())!r})
from exchange_simulator import point_at
import ccxt
ex = point_at(ccxt.binance({{"options": {{"fetchMarkets": {{"types": ["spot"]}}, "fetchCurrencies": False}}}}), {simulator.url!r})
with helpers.traced("step"):
    ex.load_markets()
    ex.fetch_ticker("BTC/USDT")
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk"))
print(",".join(loaded) or "none")
print("instrumented" if "_tickscope_instrumentation" in ex.__dict__ else "plain")
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["none", "instrumented"]


def simulator_examples() -> Any:
    from helpers.sidecar import ROOT

    return ROOT / "examples"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        (
            {},
            {
                "OTEL_TRACES_EXPORTER": "otlp",
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_LOGS_EXPORTER": "none",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_BSP_MAX_QUEUE_SIZE": "4096",
                "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "512",
                "OTEL_BSP_SCHEDULE_DELAY": "1000",
                "OTEL_METRIC_EXPORT_INTERVAL": "10000",
                "OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED": "true",
            },
        ),
        (
            {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317"},
        ),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, {}),
        (
            {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"},
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4317",
            },
        ),
        (
            {
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
            },
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": "http://127.0.0.1:4318/v1/metrics",
            },
        ),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_LOGS_EXPORTER": "otlp"},
            {
                "OTEL_METRICS_EXPORTER": "otlp",
                "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            },
        ),
    ],
    ids=["none-set", "grpc", "endpoint-set", "traces-grpc", "metrics-http", "exporters-set"],
)
def test_distro_defaults(environ: dict[str, str], expected: dict[str, str]) -> None:
    defaults = settings.otel_env_defaults(environ)
    for name, value in expected.items():
        assert defaults[name] == value, name
    endpoints = {k for k in defaults if k.endswith("_ENDPOINT")}
    assert endpoints == {k for k in expected if k.endswith("_ENDPOINT")}
    assert not set(defaults) & set(environ)  # what the operator set is never replaced


def test_the_distro_sets_defaults_and_keeps_what_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    environ = {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OTEL_LOGS_EXPORTER": "console"}
    monkeypatch.setattr(os, "environ", environ)
    TickscopeDistro().configure()
    assert environ["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://127.0.0.1:4317"
    assert environ["OTEL_EXPORTER_OTLP_PROTOCOL"] == "grpc"
    assert environ["OTEL_LOGS_EXPORTER"] == "console"
    assert environ["OTEL_TRACES_EXPORTER"] == "otlp"


def test_the_resource_detector(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POD_NAME", "pod-9")
    monkeypatch.setenv("POD_NAMESPACE", "ns-9")
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "k8s.pod.name=from-operator")
    attributes = TickscopeResourceDetector().detect().attributes
    assert attributes["k8s.pod.name"] == "pod-9"
    assert attributes["telemetry.distro.name"] == "tickscope-shim"
    from tickscope.shim.resource import default_attributes, engine_resource

    # The operator's OTEL_RESOURCE_ATTRIBUTES win over what is detected; code wins over both.
    assert "k8s.pod.name" not in default_attributes()
    resource = engine_resource("bot", None, {"k8s.namespace.name": "from-code"})
    assert resource.attributes["k8s.pod.name"] == "from-operator"
    assert resource.attributes["k8s.namespace.name"] == "from-code"
    assert resource.attributes["service.name"] == "bot"
    assert engine_resource().attributes["service.name"] == "trading-engine"
    monkeypatch.setenv("OTEL_SERVICE_NAME", "named-by-operator")
    assert engine_resource().attributes["service.name"] == "named-by-operator"


def test_instrumenting_logs_nothing_at_warning(
    providers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    tracer_provider, _, _, _ = providers
    with caplog.at_level(logging.WARNING):
        shim.instrument_ccxt(tracer_provider=tracer_provider)
        shim.instrument_ccxt(
            tracer_provider=tracer_provider
        )  # the function stays quiet on a second call
        shim.uninstrument_ccxt()
        shim.uninstrument_ccxt()
    assert [r.getMessage() for r in caplog.records] == []
