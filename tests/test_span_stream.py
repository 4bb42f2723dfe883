"""The span stream's caches (attribute signatures, shapes, series held by shapes)
must never change what is counted: checked in-process against the aggregators'
own series, span by span, across expiry, overflow and cache resets."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from helpers.otlp import many, request
from tickscope.connectors import spanstream
from tickscope.connectors.spanmetrics import SpanMetrics, SpanMetricsConfig
from tickscope.connectors.spanstream import SpanStream
from tickscope.connectors.trading import TradingConfig, TradingMetrics

ERROR = 2
CLIENT = 3  # SPAN_KIND_CLIENT, as the series keys hold it


def stream(**spanmetrics: Any) -> tuple[SpanStream, SpanMetrics, TradingMetrics]:
    registry = CollectorRegistry()
    metrics = SpanMetrics(SpanMetricsConfig(**spanmetrics), registry)
    trading = TradingMetrics(TradingConfig(), registry)
    return SpanStream(metrics, trading), metrics, trading


def consume(s: SpanStream, service: str, spans: list[dict[str, Any]]) -> None:
    assert s.consume(request(service, spans).SerializeToString()) == len(spans)


def calls(metrics: SpanMetrics, key: tuple[Any, ...]) -> int:
    counts = metrics.histogram.counts(key)
    return 0 if counts is None else sum(counts)


TICKER = {"exchange.id": "binance", "ccxt.method": "fetch_ticker"}


def test_a_shape_seen_again_after_its_series_expired_gets_a_new_series() -> None:
    s, metrics, _ = stream()
    key = ("svc", "ccxt.fetch_ticker", CLIENT, 0, "binance", "fetch_ticker", "")
    consume(s, "svc", many("ccxt.fetch_ticker", 3, attributes=TICKER))
    assert calls(metrics, key) == 3
    # Far in the future: the series expires, while the stream still holds its shape.
    assert metrics.expire(now=1e12) == 1
    assert metrics.histogram.counts(key) is None
    consume(s, "svc", many("ccxt.fetch_ticker", 2, attributes=TICKER))
    assert calls(metrics, key) == 2
    assert len(metrics.histogram) == 1


def test_every_span_past_the_limit_counts_as_overflow() -> None:
    s, metrics, _ = stream(max_series=1)
    consume(s, "svc", [{"name": "first"}])
    # The same over-the-limit shape, again and again, in one batch and the next.
    consume(s, "svc", many("second", 4))
    consume(s, "svc", many("second", 3))
    assert metrics.overflow_total._value.get() == 7
    overflow = metrics.histogram.lookup(spanstream.OVERFLOW)
    assert overflow is not None and sum(overflow.counts) == 7


def test_the_newest_rate_limit_headers_win_though_signatures_hide_them() -> None:
    s, _, trading = stream()
    spans = [
        {
            "name": "ccxt.fetch_ticker",
            "attributes": {
                **TICKER,
                "trading.ratelimit.used": used,
                "trading.ratelimit.limit": 1000,
            },
        }
        for used in (100, 700, 300)
    ]
    consume(s, "svc", spans)
    assert trading.used_ratio.value(("binance",)) == pytest.approx(0.3)
    consume(s, "svc", spans[:2])
    assert trading.used_ratio.value(("binance",)) == pytest.approx(0.7)


def snapshot(metrics: SpanMetrics, trading: TradingMetrics) -> dict[str, Any]:
    histogram = metrics.histogram
    return {
        "spans": {
            key: (histogram.counts(key), round(histogram.lookup(key).sum, 9))  # type: ignore[union-attr]
            for key in list(histogram._series)
        },
        "errors": {key: slot.value for key, slot in trading.errors._series.items()},
        "orders": {key: slot.value for key, slot in trading.orders._series.items()},
    }


def test_counts_survive_attribute_and_shape_cache_resets(monkeypatch: pytest.MonkeyPatch) -> None:
    methods = ("fetch_ticker", "fetch_balance", "create_order", "cancel_order")
    spans: list[dict[str, Any]] = []
    for i in range(40):
        method = methods[i % 4]
        attributes = {"exchange.id": "binance", "ccxt.method": method, "trading.symbol": f"S{i}"}
        span: dict[str, Any] = {"name": f"ccxt.{method}", "seconds": 0.001 * (i + 1)}
        if method == "create_order":
            attributes["trading.order.side"] = ("buy", "sell")[i % 2]
        if i % 5 == 0:
            attributes["error.type"] = "InsufficientFunds"
            span["status"] = ERROR
        spans.append({**span, "attributes": attributes})
    reference = stream()
    for _ in range(3):
        consume(reference[0], "svc", spans)

    monkeypatch.setattr(spanstream, "MAX_SHAPES", 2)
    small = stream()
    small[0].attributes.max_entries = 3  # cleared every few new attributes
    small[0].attributes.max_pairs = 4  # and its numbers every few wanted values
    for _ in range(3):
        consume(small[0], "svc", spans)

    expected = snapshot(*reference[1:])
    assert sum(sum(counts) for counts, _ in expected["spans"].values()) == 120
    assert sum(expected["errors"].values()) == 3 * 8
    assert sum(expected["orders"].values()) == 3 * 10
    assert snapshot(*small[1:]) == expected


def test_status_descriptions_do_not_split_shapes() -> None:
    s, metrics, _ = stream()
    spans = [
        {
            "name": "ccxt.create_order",
            "attributes": TICKER,
            "status": ERROR,
            "message": f"order {i}",
        }
        for i in range(50)
    ]
    consume(s, "svc", spans)
    key = ("svc", "ccxt.create_order", CLIENT, ERROR, "binance", "fetch_ticker", "")
    assert calls(metrics, key) == 50
    assert s._shape_count == 1
