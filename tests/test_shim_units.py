"""The shim's pure parts: rate-limit headers, what may be recorded, helpers."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from tickscope.shim.logfilter import RateLimitFilter
from tickscope.shim.ratelimit import parse_rate_limit
from tickscope.shim.redact import safe_method, safe_text, server_address


class Headers(dict[str, str]):
    """Case-insensitive like requests' and aiohttp's header mappings."""

    def __init__(self, items: dict[str, str]) -> None:
        super().__init__({k.lower(): v for k, v in items.items()})

    def get(self, key: str, default: str | None = None) -> str | None:  # type: ignore[override]
        return super().get(key.lower(), default)


@pytest.mark.parametrize(
    ("exchange", "headers", "expected"),
    [
        ("binance", {"X-MBX-USED-WEIGHT-1M": "1200"}, (1200.0, 6000.0)),
        ("binance", {"x-mbx-used-weight-1m": "12", "x-mbx-used-weight": "900"}, (12.0, 6000.0)),
        ("bybit", {"X-Bapi-Limit": "120", "X-Bapi-Limit-Status": "100"}, (20.0, 120.0)),
        (
            "kucoin",
            {"gw-ratelimit-limit": "2000", "gw-ratelimit-remaining": "1500"},
            (500.0, 2000.0),
        ),
        ("okx", {"X-RateLimit-Limit": "60", "X-RateLimit-Remaining": "45"}, (15.0, 60.0)),
        ("kraken", {"RateLimit-Limit": "100", "RateLimit-Remaining": "100"}, (0.0, 100.0)),
        ("kraken", {"Content-Type": "application/json"}, None),
        ("binance", {"x-mbx-used-weight-1m": "lots"}, None),
        ("bybit", {"X-Bapi-Limit": "0", "X-Bapi-Limit-Status": "0"}, None),
    ],
)
def test_rate_limit_headers(
    exchange: str, headers: dict[str, str], expected: tuple[float, float] | None
) -> None:
    assert parse_rate_limit(exchange, Headers(headers)) == expected


def test_configured_limit_wins() -> None:
    assert parse_rate_limit(
        "binance", Headers({"x-mbx-used-weight-1m": "10"}), {"binance": 1200}
    ) == (10.0, 1200.0)


def test_only_hosts_and_short_tokens_are_recorded() -> None:
    signed = (
        "https://api.binance.com/api/v3/account?timestamp=1&signature=abcdef0123&recvWindow=5000"
    )
    assert server_address(signed) == "api.binance.com"
    assert server_address("https://user:pass@example.com:8443/x?y") == "example.com"
    assert server_address("not a url") is None
    assert safe_method("post") == "POST" and safe_method("BREW") is None
    assert safe_text("BTC/USDT") == "BTC/USDT" and safe_text("BTC/USDT:USDT") == "BTC/USDT:USDT"
    assert (
        safe_text("a" * 65) is None and safe_text("key=secret&x") is None and safe_text(42) is None
    )


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def test_traced_decorator_and_context_manager(
    spans: tuple[TracerProvider, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, exporter = spans
    from opentelemetry import trace

    from tickscope import shim

    monkeypatch.setattr(trace, "get_tracer", lambda *a, **k: provider.get_tracer("t"))

    @shim.traced("risk.check", {"desk": "a"})
    def check(x: int) -> int:
        if x < 0:
            raise ValueError("secret-canary-in-message")
        return x * 2

    @shim.traced("strategy.step")
    async def step() -> str:
        await asyncio.sleep(0)
        return "done"

    assert check(2) == 4
    with pytest.raises(ValueError, match="secret-canary") as info:
        check(-1)
    assert asyncio.run(step()) == "done"
    with shim.traced("block") as span:
        span.set_attribute("n", 1)
    with pytest.raises(KeyError), shim.traced("failing.block"):
        raise KeyError("x")
    finished = {s.name: s for s in exporter.get_finished_spans()}
    assert set(finished) == {"risk.check", "strategy.step", "block", "failing.block"}
    failed = [s for s in exporter.get_finished_spans() if s.status.status_code == StatusCode.ERROR]
    assert sorted(s.name for s in failed) == ["failing.block", "risk.check"]
    for s in failed:
        assert s.attributes["error.type"] in ("ValueError", "KeyError")
        assert not s.events  # no exception event: its message could hold anything
        assert "canary" not in (s.status.description or "")
    assert info.value.args == ("secret-canary-in-message",)  # re-raised unchanged


def test_log_filter_lets_one_message_through_per_interval() -> None:
    import logging

    f = RateLimitFilter(interval=60)
    records = [
        logging.LogRecord(
            "opentelemetry.sdk._shared_internal",
            logging.WARNING,
            "",
            0,
            "Queue full, dropping %s.",
            ("Span",),
            None,
        )
        for _ in range(1000)
    ]
    passed = [r for r in records if f.filter(r)]
    assert len(passed) == 1
    other = logging.LogRecord("x", logging.WARNING, "", 0, "another message", (), None)
    assert f.filter(other)


def test_export_gate_closes_on_failure_probes_and_reopens() -> None:
    import time as _time

    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from tickscope.shim.export import ExportGate, GatedExporter

    class Flaky(SpanExporter):
        result = SpanExportResult.FAILURE

        def export(self, spans: object) -> SpanExportResult:
            return self.result

    gate = ExportGate(probe_interval=0.2)
    inner = Flaky()
    exporter = GatedExporter(inner, gate)
    assert gate.allow() and gate.allow()
    assert exporter.export([]) is SpanExportResult.FAILURE
    assert not gate.open
    assert [gate.allow() for _ in range(100)] == [False] * 100
    assert gate.skipped == 100
    _time.sleep(0.25)
    assert gate.allow()  # one probe per interval keeps the exporter trying
    assert not gate.allow()
    inner.result = SpanExportResult.SUCCESS
    assert exporter.export([]) is SpanExportResult.SUCCESS
    assert gate.open and all(gate.allow() for _ in range(10))


def test_a_full_queue_drops_spans_and_counts_every_one(monkeypatch: pytest.MonkeyPatch) -> None:
    """The span processor configure() and the configurator build (export.batch_processor),
    with the exporter held inside an export: exactly what does not fit is dropped,
    and the SDK counts it (error.type=queue_full) beside what it handed over."""
    import logging
    import threading

    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

    from tickscope.shim import export, logfilter

    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    entered, release = threading.Event(), threading.Event()

    class Held(SpanExporter):
        exported = 0

        def export(self, spans: Any) -> SpanExportResult:
            Held.exported += len(spans)
            entered.set()
            release.wait(10)
            return SpanExportResult.SUCCESS

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    processor = export.batch_processor(
        Held(),
        export_gate=export.ExportGate(),
        meter_provider=meter_provider,
        max_queue_size=8,
        max_export_batch_size=8,
        schedule_delay_millis=60_000,  # only a full batch wakes the worker
    )
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("t")
    warnings: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "Queue full" in record.getMessage():
                warnings.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    for name in logfilter.OTEL_LOGGERS:  # another test's rate limit must not hide them
        monkeypatch.setattr(logging.getLogger(name), "filters", [])
    try:
        for _ in range(8):
            tracer.start_span("s").end()
        assert entered.wait(10)  # the worker took those 8 and is held in export()
        for _ in range(20):  # 8 fit in the queue, 12 do not
            tracer.start_span("s").end()
        release.set()
        assert processor.force_flush(10_000)
    finally:
        release.set()
        logging.getLogger().removeHandler(keep)
        provider.shutdown()
    counts: dict[str | None, int] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                if metric.name == "otel.sdk.processor.span.processed":
                    for point in metric.data.data_points:
                        key = point.attributes.get("error.type")
                        counts[None if key is None else str(key)] = int(point.value)
    assert counts == {None: 16, "queue_full": 12}
    assert Held.exported == 16
    # The SDK warns once per dropped span, on a logger the shim's rate limit covers.
    assert len(warnings) == 12
    assert {r.name for r in warnings} <= set(logfilter.OTEL_LOGGERS)
