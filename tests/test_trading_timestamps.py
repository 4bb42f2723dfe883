"""exchange_timestamp_rejections_total{exchange,method}: calls refused for their
timestamp (error.type in trading.timestamp_error_types, InvalidNonce by default),
served at 0 for each method an exchange has called from its first call. In-process
with span tables, then real ccxt against the simulator with its clock moved so far
that Binance's -1021 comes back (ccxt raises InvalidNonce for it), the shim's spans
fed to the sidecar's span stream, and once end to end through a sidecar process."""

from __future__ import annotations

from typing import Any

import ccxt
import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

from helpers.otlp import request
from helpers.sidecar import StartSidecar, sample_value
from tickscope import shim
from tickscope.connectors.spanstream import SpanStream
from tickscope.connectors.trading import TradingConfig, TradingMetrics
from tickscope.exposition.text import Lines

ERROR = 2
NAME = "exchange_timestamp_rejections_total"


def stream(**config: Any) -> tuple[SpanStream, TradingMetrics]:
    trading = TradingMetrics(TradingConfig(**config), CollectorRegistry())
    return SpanStream(None, trading), trading


def span(method: str, error: str | None = None, exchange: str = "binance") -> dict[str, Any]:
    attributes = {"exchange.id": exchange, "ccxt.method": method}
    if error is None:
        return {"name": f"ccxt.{method}", "attributes": attributes}
    return {
        "name": f"ccxt.{method}",
        "attributes": {**attributes, "error.type": error},
        "status": ERROR,
    }


def consume(s: SpanStream, spans: list[dict[str, Any]]) -> None:
    assert s.consume(request("engine", spans).SerializeToString()) == len(spans)


def rejections(trading: TradingMetrics) -> dict[tuple[str, str], float]:
    family = trading.timestamp_rejections
    return {key: family.value(key) for key in list(family._series)}  # type: ignore[misc]


def test_invalid_nonce_is_counted_by_method_and_zero_is_served_before() -> None:
    s, trading = stream()
    consume(s, [span("fetch_ticker"), span("fetch_balance")])
    # Before any rejection, each method called reads 0 (increase() sees the first one).
    assert rejections(trading) == {
        ("binance", "fetch_ticker"): 0.0,
        ("binance", "fetch_balance"): 0.0,
    }
    consume(
        s,
        [
            span("fetch_balance", "InvalidNonce"),
            span("fetch_balance", "InvalidNonce"),
            span("create_order", "InvalidNonce"),
            span("create_order", "InsufficientFunds"),  # refused, not for its clock
            span("fetch_ticker", "RequestTimeout"),
            span("fetch_ticker", "InvalidNonce", exchange="bybit"),
        ],
    )
    assert rejections(trading) == {
        ("binance", "fetch_ticker"): 0.0,
        ("binance", "fetch_balance"): 2.0,
        ("binance", "create_order"): 1.0,
        ("bybit", "fetch_ticker"): 1.0,
    }
    # Also in the errors: a rejection is an error like any other.
    assert trading.errors.value(("binance", "fetch_balance", "InvalidNonce")) == 2.0
    out = Lines()
    trading.render(out, False, None)
    text = "".join(out)
    assert "# TYPE exchange_timestamp_rejections_total counter" in text
    assert (
        'exchange_timestamp_rejections_total{exchange="binance",method="create_order"} 1.0' in text
    )


def test_the_error_types_are_configurable() -> None:
    s, trading = stream(timestamp_error_types=["InvalidNonce", "BadRequest"])
    consume(s, [span("fetch_balance", "BadRequest"), span("fetch_balance", "InvalidNonce")])
    assert rejections(trading) == {("binance", "fetch_balance"): 2.0}
    s, trading = stream(timestamp_error_types=[])
    consume(s, [span("fetch_balance", "InvalidNonce")])
    assert rejections(trading) == {("binance", "fetch_balance"): 0.0}


def test_zeros_are_kept_fresh_and_bounded() -> None:
    s, trading = stream(max_series=3)
    consume(s, [span(f"method_{i}") for i in range(5)])
    # Past the series limit a 0 would only count as overflow: not served.
    assert len(rejections(trading)) == 3
    assert "otel_metric_overflow" not in "".join(_render(trading))
    # A rejection past the limit folds into the overflow series as usual.
    consume(s, [span("method_9", "InvalidNonce")])
    family = trading.timestamp_rejections
    assert sum(rejections(trading).values()) == 1.0 and len(family) == 4
    # Expiry: the zeros are refreshed each batch the exchange calls anything.
    s, trading = stream(series_expiry=60)
    consume(s, [span("fetch_ticker")])
    slot = trading.timestamp_rejections.find(("binance", "fetch_ticker"))
    assert slot is not None
    first = slot.last_seen
    consume(s, [span("fetch_ticker")])  # the same shape: plan() is not asked again
    assert slot.last_seen >= first
    trading.timestamp_rejections.expire(slot.last_seen + 1)
    consume(s, [span("load_markets")])  # any call brings the exchange's zeros back
    assert set(rejections(trading)) == {("binance", "fetch_ticker"), ("binance", "load_markets")}


def _render(trading: TradingMetrics) -> list[str]:
    out = Lines()
    trading.render(out, False, None)
    return out


def test_long_label_values_are_cut_like_the_others() -> None:
    # (12 keeps "InvalidNonce" whole: an error.type longer than the limit is cut
    # before it is matched, as for the other lists.)
    s, trading = stream(max_label_value_length=12)
    long_span = span(
        "fetch_balance_of_many_words", "InvalidNonce", exchange="exchange_with_a_long_id"
    )
    consume(s, [long_span])
    assert rejections(trading) == {("exchange_...", "fetch_bal..."): 1.0}


def test_binance_1021_is_invalid_nonce_in_ccxt() -> None:
    exact = ccxt.binance().exceptions["exact"]
    assert exact["-1021"] is ccxt.InvalidNonce
    # Binance's portfolio-margin API (papi) maps it to BadRequest: not counted by default.
    assert ccxt.binance().exceptions["portfolioMargin"]["exact"]["-1021"] is ccxt.BadRequest


# -- real ccxt, the simulator's clock moved past the receive window --------------------


@pytest.fixture
def spans() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


@pytest.mark.parametrize(
    ("offset", "message"),
    [(-2.5, "1000ms ahead of the server's time"), (20.0, "outside of the recvWindow")],
)
def test_signed_calls_refused_for_the_clock_are_counted(
    simulator: Any, spans: Any, offset: float, message: str
) -> None:
    provider, exporter = spans
    simulator.reset()
    ex = simulator.point(ccxt.binance(simulator.ccxt_config("key-ts", "secret-ts")))
    ex.timeout = 2000
    shim.instrument_exchange(ex, tracer_provider=provider)
    ex.load_markets()
    simulator.set_clock_offset(offset)
    try:
        ex.fetch_ticker("BTC/USDT")  # public: no timestamp to judge
        for _ in range(2):
            with pytest.raises(ccxt.InvalidNonce, match=message):
                ex.fetch_balance()
        with pytest.raises(ccxt.InvalidNonce):
            ex.create_order("BTC/USDT", "limit", "buy", 0.001, 30000)
        # ccxt's own fix: the time difference, as adjustForTimeDifference loads it.
        ex.load_time_difference()
        ex.fetch_balance()
    finally:
        simulator.set_clock_offset(0)
    s, trading = stream()
    s.consume(encode_spans(exporter.get_finished_spans()).SerializeToString())
    assert rejections(trading) == {
        ("binance", "load_markets"): 0.0,
        ("binance", "fetch_ticker"): 0.0,
        ("binance", "fetch_time"): 0.0,
        ("binance", "fetch_balance"): 2.0,
        ("binance", "create_order"): 1.0,
    }


def test_end_to_end_through_the_sidecar(simulator: Any, start_sidecar: StartSidecar) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource

    sidecar = start_sidecar({"host": {"enabled": False}})
    provider = TracerProvider(resource=Resource.create({"service.name": "ts-e2e"}))
    provider.add_span_processor(
        SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{sidecar.otlp_http_url}/v1/traces"))
    )
    simulator.reset()
    ex = simulator.point(ccxt.binance(simulator.ccxt_config("key-e2e", "secret-e2e")))
    ex.timeout = 2000
    shim.instrument_exchange(ex, tracer_provider=provider)
    try:
        ex.load_markets()
        ex.fetch_balance()
        simulator.set_clock_offset(-3.0)
        with pytest.raises(ccxt.InvalidNonce):
            ex.fetch_balance()
    finally:
        simulator.set_clock_offset(0)
        provider.shutdown()
    families = sidecar.families_when(
        lambda f: (
            "exchange_timestamp_rejections" in f
            and any(s.value == 1 for s in f["exchange_timestamp_rejections"].samples)
        ),
        "a timestamp rejection",
    )
    family = families["exchange_timestamp_rejections"]
    assert sample_value(family, NAME, exchange="binance", method="fetch_balance") == 1.0
    assert sample_value(family, NAME, exchange="binance", method="load_markets") == 0.0
