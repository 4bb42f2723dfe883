"""Realistic OTLP trace batches, shaped like the shim's ccxt spans, pre-encoded."""

from __future__ import annotations

import random
import time

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

METHODS = (
    "fetch_ticker",
    "fetch_order_book",
    "fetch_balance",
    "create_order",
    "cancel_order",
    "fetch_open_orders",
)
SYMBOLS = ("BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT")


def _kv(key: str, value: str | int) -> KeyValue:
    if isinstance(value, str):
        return KeyValue(key=key, value=AnyValue(string_value=value))
    return KeyValue(key=key, value=AnyValue(int_value=value))


def make_request(spans: int, seed: int, distinct_names: int = 0) -> ExportTraceServiceRequest:
    """`spans` CLIENT spans with the shim's attributes; 5% fail (rate limits,
    insufficient funds). With `distinct_names`, span names cycle through that
    many values, to make that many label sets."""
    rng = random.Random(seed)
    request = ExportTraceServiceRequest()
    resource_spans = request.resource_spans.add()
    resource_spans.resource.attributes.extend(
        [
            _kv("service.name", "engine"),
            _kv("service.version", "1.4.2"),
            _kv("host.name", "engine-7d9f-x2"),
        ]
    )
    scope_spans = resource_spans.scope_spans.add()
    scope_spans.scope.name = "tickscope.shim.ccxt"
    now = time.time_ns()
    for i in range(spans):
        span = scope_spans.spans.add()
        span.trace_id = rng.randbytes(16)
        span.span_id = rng.randbytes(8)
        method = METHODS[i % len(METHODS)]
        span.name = (
            f"ccxt.{method}"
            if not distinct_names
            else f"ccxt.{method}.{(seed * spans + i) % distinct_names}"
        )
        span.kind = Span.SPAN_KIND_CLIENT
        span.start_time_unix_nano = now
        span.end_time_unix_nano = now + rng.randint(2_000_000, 400_000_000)
        attrs = [
            _kv("exchange.id", "binance"),
            _kv("ccxt.method", method),
            _kv("trading.symbol", SYMBOLS[i % len(SYMBOLS)]),
            _kv("server.address", "api.binance.com"),
            _kv(
                "http.request.method",
                "POST" if method in ("create_order", "cancel_order") else "GET",
            ),
            _kv("http.response.status_code", 200),
            _kv("trading.ratelimit.used", rng.randint(1, 1200)),
            _kv("trading.ratelimit.limit", 6000),
        ]
        if method == "create_order":
            attrs += [
                _kv("trading.order.side", rng.choice(("buy", "sell"))),
                _kv("trading.order.type", "limit"),
            ]
        if rng.random() < 0.05:
            attrs.append(_kv("error.type", rng.choice(("RateLimitExceeded", "InsufficientFunds"))))
            span.status.code = Status.STATUS_CODE_ERROR
        span.attributes.extend(attrs)
    return request


def make_batches(count: int, spans: int = 512, distinct_names: int = 0) -> list[bytes]:
    return [make_request(spans, seed, distinct_names).SerializeToString() for seed in range(count)]


def make_metrics_request(points: int, seed: int, streams: int = 500) -> bytes:
    """`points` data points: a third counters, a third gauges, a third histograms,
    spread over `streams` label sets, shaped like an engine's metrics."""
    from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
        ExportMetricsServiceRequest,
    )
    from opentelemetry.proto.metrics.v1 import metrics_pb2

    rng = random.Random(seed)
    request = ExportMetricsServiceRequest()
    rm = request.resource_metrics.add()
    rm.resource.attributes.extend(
        [_kv("service.name", "engine"), _kv("service.instance.id", "engine-0")]
    )
    sm = rm.scope_metrics.add()
    sm.scope.name = "engine.metrics"
    now = time.time_ns()
    kinds = ("sum", "gauge", "histogram")
    per_kind = points // 3
    for kind in kinds:
        metric = sm.metrics.add()
        metric.name = f"engine.bench.{kind}"
        for i in range(per_kind):
            if kind == "sum":
                metric.sum.is_monotonic = True
                metric.sum.aggregation_temporality = (
                    metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                )
                p = metric.sum.data_points.add()
                p.as_double = float(seed * 1000 + i)
            elif kind == "gauge":
                p = metric.gauge.data_points.add()
                p.as_double = rng.random()
            else:
                metric.histogram.aggregation_temporality = (
                    metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
                )
                p = metric.histogram.data_points.add()
                p.explicit_bounds.extend([0.005, 0.01, 0.05, 0.1, 0.5, 1.0])
                p.bucket_counts.extend([rng.randint(0, 9) for _ in range(7)])
                p.count = sum(p.bucket_counts)
                p.sum = rng.random() * p.count
            p.start_time_unix_nano = now - 10**9
            p.time_unix_nano = now + seed
            p.attributes.extend(
                [
                    _kv("symbol", SYMBOLS[i % len(SYMBOLS)]),
                    _kv("stream", str((seed * per_kind + i) % (streams // 3 or 1))),
                ]
            )
    return request.SerializeToString()
