"""Hostile spans (issue 11, defects 6 and 7): one bad span costs only itself, label
values and attribute counts are bounded, and no input makes the consumers raise or
the exposition unparseable (property tests over arbitrary attribute sets)."""

from __future__ import annotations

import math
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from helpers.otlp import BASE_NS, PROTOBUF, request
from helpers.sidecar import StartSidecar, http_post, sample_value
from tickscope.connectors.spanmetrics import SpanMetrics, SpanMetricsConfig
from tickscope.connectors.spanstream import SpanStream
from tickscope.connectors.trading import TradingConfig, TradingMetrics
from tickscope.core import spanview
from tickscope.core.spanview import decode_traces
from tickscope.exposition.text import Lines

ERROR = 2
CLIENT = 3
MB = 1 << 20


def stream(
    spanmetrics: dict[str, Any] | None = None, trading: dict[str, Any] | None = None
) -> tuple[SpanStream, SpanMetrics, TradingMetrics, CollectorRegistry]:
    registry = CollectorRegistry()
    metrics = SpanMetrics(SpanMetricsConfig(**(spanmetrics or {})), registry)
    orders = TradingMetrics(TradingConfig(**(trading or {})), registry)
    return SpanStream(metrics, orders), metrics, orders, registry


def consume(s: SpanStream, service: str, spans: list[dict[str, Any]]) -> None:
    assert s.consume(request(service, spans).SerializeToString()) == len(spans)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    found = registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


def rendered(metrics: SpanMetrics, trading: TradingMetrics, openmetrics: bool) -> str:
    out = Lines()
    metrics.render(out, openmetrics, None)
    trading.render(out, openmetrics, None)
    return "".join(out) + ("# EOF\n" if openmetrics else "")


def calls_by_labels(text: str) -> dict[tuple[tuple[str, str], ...], float]:
    family = {f.name: f for f in parse_text(text)}["traces_span_metrics_calls"]
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples}


TICKER = {"exchange.id": "binance", "ccxt.method": "fetch_ticker"}
ORDER = {"exchange.id": "binance", "ccxt.method": "create_order", "trading.order.side": "buy"}
LIMIT_ONLY = {**TICKER, "trading.ratelimit.limit": 1200}


# -- defect 6: a bad span costs only itself ------------------------------------------


def test_a_rate_limit_limit_without_used_costs_nothing_and_later_batches_count() -> None:
    s, metrics, trading, registry = stream()
    batch = [
        {"name": "ccxt.fetch_ticker", "attributes": LIMIT_ONLY},
        {"name": "ccxt.create_order", "attributes": ORDER, "seconds": 0.003},
        {"name": "ccxt.fetch_ticker", "attributes": TICKER},
    ]
    consume(s, "svc", batch)  # raised KeyError('trading.ratelimit.used') before the fix
    consume(s, "svc", batch)  # and so did every later batch
    used = {**TICKER, "trading.ratelimit.used": 300, "trading.ratelimit.limit": 1200}
    consume(s, "svc", [{"name": "ccxt.fetch_ticker", "attributes": used}])
    ticker = ("svc", "ccxt.fetch_ticker", CLIENT, 0, "binance", "fetch_ticker", "")
    order = ("svc", "ccxt.create_order", CLIENT, 0, "binance", "create_order", "")
    assert sum(metrics.histogram.counts(ticker) or []) == 5
    assert sum(metrics.histogram.counts(order) or []) == 2
    assert trading.orders.value(("binance", "buy", "", "accepted")) == 2.0
    assert trading.used_ratio.value(("binance",)) == 0.25
    assert trading.rate_limit_seen == {} and trading.exchanges_seen == set()
    assert trading._touched == [] and metrics.touched == []
    assert value(registry, "tickscope_spanstream_failed_spans_total") == 0.0


@pytest.mark.parametrize(
    ("used", "limit"),
    [
        ("300", None),
        (None, "1200"),
        ("nan", "1200"),
        ("inf", "1200"),
        ("300", "inf"),
        ("-1", "1200"),
        ("300", "0"),
        ("300", "-5"),
        ("1e308", "1e-308"),
        ("3" * 100, "1200"),
        ("abc", "1200"),
    ],
)
def test_unusable_rate_limit_headers_set_no_ratio(used: str | None, limit: str | None) -> None:
    from tickscope.connectors.trading import _ratio

    assert _ratio(used, limit) is None


def test_a_span_the_loop_fails_on_costs_only_itself(monkeypatch: pytest.MonkeyPatch) -> None:
    s, _, trading, registry = stream()
    real = trading.record

    def record(plan: Any, duration: float, span: Any, now: float) -> None:
        if span.name == "ccxt.create_order" and duration > 0.002:
            raise RuntimeError("a bug in one span's path")
        real(plan, duration, span, now)

    monkeypatch.setattr(trading, "record", record)
    consume(
        s,
        "svc",
        [
            {"name": "ccxt.create_order", "attributes": ORDER, "seconds": 0.001},
            {"name": "ccxt.create_order", "attributes": ORDER, "seconds": 0.005},
            {"name": "ccxt.create_order", "attributes": ORDER, "seconds": 0.001},
        ],
    )
    assert trading.orders.value(("binance", "buy", "", "accepted")) == 2.0
    assert value(registry, "tickscope_spanstream_failed_spans_total") == 1.0
    assert s.failed == 1 and s.spans == 3
    assert trading._touched == []  # the batch's exemplars were made and cleared


def test_per_batch_state_is_reset_when_an_end_of_batch_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s, _, trading, _ = stream()
    calls = {"n": 0}
    real = trading.used_ratio.set

    def failing_set(key: tuple[str, ...], ratio: float, now: float) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("once")
        real(key, ratio, now)

    monkeypatch.setattr(trading.used_ratio, "set", failing_set)
    used = {**ORDER, "trading.ratelimit.used": 600, "trading.ratelimit.limit": 1200}
    with pytest.raises(RuntimeError, match="once"):
        consume(s, "svc", [{"name": "ccxt.create_order", "attributes": used}])
    assert trading.rate_limit_seen == {} and trading.exchanges_seen == set()
    assert trading._touched == []
    consume(s, "svc", [{"name": "ccxt.create_order", "attributes": used}])
    assert trading.used_ratio.value(("binance",)) == 0.5
    assert trading.orders.value(("binance", "buy", "", "accepted")) == 2.0


def test_sidecar_counts_the_batches_after_a_limit_only_span(start_sidecar: StartSidecar) -> None:
    sidecar = start_sidecar({"host": {"enabled": False}})
    url = sidecar.otlp_http_url + "/v1/traces"
    bad = [
        {"name": "ccxt.fetch_ticker", "attributes": LIMIT_ONLY},
        {"name": "ccxt.fetch_ticker", "attributes": TICKER},
    ]
    good = [{"name": "ccxt.fetch_ticker", "attributes": TICKER}] * 3
    for spans in (bad, good, good):
        body = request("svc-hostile", spans).SerializeToString()
        assert http_post(url, body, PROTOBUF).status == 200

    def counted(families: dict[str, Any]) -> bool:
        family = families.get("traces_span_metrics_calls")
        if family is None:
            return False
        return any(
            s.labels.get("service_name") == "svc-hostile" and s.value == 8 for s in family.samples
        )

    families = sidecar.families_when(counted, "8 calls for svc-hostile")
    errors = families["tickscope_pipeline_consumer_errors"]
    assert sample_value(errors, consumer="span_metrics") == 0.0
    assert sample_value(families["tickscope_spanstream_failed_spans"]) == 0.0
    assert sample_value(families["exchange_rate_limit_hits"], exchange="binance") == 0.0
    assert "exchange_rate_limit_used_ratio" not in families or not any(
        s.labels.get("exchange") == "binance"
        for s in families["exchange_rate_limit_used_ratio"].samples
    )
    assert [e for e in sidecar.logs if e.get("level") in ("error", "critical")] == []


# -- defect 7: label values and attribute counts are bounded ---------------------------


def test_megabyte_span_names_fold_into_one_truncated_series() -> None:
    s, metrics, trading, registry = stream()
    # 20 spans with distinct 1 MB names made /metrics 400 MB before the fix.
    spans = [{"name": "ccxt." + "x" * MB + str(i), "attributes": TICKER} for i in range(20)]
    consume(s, "svc", spans)
    text = rendered(metrics, trading, openmetrics=False)
    name = "ccxt." + "x" * 120 + "..."
    assert len(name) == 128
    assert calls_by_labels(text) == {
        (
            ("error_type", ""),
            ("exchange", "binance"),
            ("method", "fetch_ticker"),
            ("service_name", "svc"),
            ("span_kind", "SPAN_KIND_CLIENT"),
            ("span_name", name),
            ("status_code", "STATUS_CODE_UNSET"),
        ): 20.0
    }
    assert len(text) < 20_000
    reason = "label_value_length"
    assert value(registry, "tickscope_spanmetrics_truncated_spans_total", reason=reason) == 20.0
    assert value(registry, "tickscope_trading_truncated_spans_total", reason=reason) == 0.0
    # No shape holds a whole name: they are worked out span by span instead.
    assert s._shape_count == 0


def test_long_service_dimension_and_trading_labels_are_cut_at_their_limits() -> None:
    s, metrics, trading, registry = stream(
        {"max_label_value_length": 16}, {"max_label_value_length": 10}
    )
    attributes = {
        "exchange.id": "binance-" + "e" * 500,
        "ccxt.method": "create_order",
        "trading.order.side": "buy" * 100,
        "error.type": "InsufficientFunds",  # 17 characters: cut, yet still "rejected"
    }
    spans = [{"name": "ccxt.create_order", "attributes": attributes, "status": ERROR}] * 3
    consume(s, "s" * 40, spans)
    key = (
        "sssssssssssss...",
        "ccxt.create_o...",
        CLIENT,
        ERROR,
        "binance-eeeee...",
        "create_order",
        "InsufficientF...",
    )
    assert sum(metrics.histogram.counts(key) or []) == 3
    assert trading.orders.value(("binance...", "buybuyb...", "", "rejected")) == 3.0
    assert trading.errors.value(("binance...", "create_...", "Insuffi...")) == 3.0
    assert trading.rate_limit_hits.value(("binance...",)) == 0.0
    reason = "label_value_length"
    assert value(registry, "tickscope_spanmetrics_truncated_spans_total", reason=reason) == 3.0
    assert value(registry, "tickscope_trading_truncated_spans_total", reason=reason) == 3.0
    text = rendered(metrics, trading, openmetrics=False)
    assert (
        'trading_orders_total{exchange="binance...",side="buybuyb...",type="",'
        'outcome="rejected"} 3.0\n'
    ) in text


def test_attributes_past_the_count_limit_are_not_read_and_counted() -> None:
    s, metrics, trading, registry = stream(
        {"max_attributes_per_span": 4}, {"max_attributes_per_span": 6}
    )
    filler = {f"other.{i}": i for i in range(4)}
    # exchange.id is the 5th attribute: past span metrics' 4, within trading's 6.
    attributes = {**filler, "exchange.id": "binance", "ccxt.method": "fetch_ticker", "x.y": 1}
    consume(s, "svc", [{"name": "ccxt.fetch_ticker", "attributes": attributes}] * 2)
    key = ("svc", "ccxt.fetch_ticker", CLIENT, 0, "", "", "")
    assert sum(metrics.histogram.counts(key) or []) == 2
    assert trading.rate_limit_hits.value(("binance",)) == 0.0  # trading read exchange.id
    reason = "attribute_count"
    assert value(registry, "tickscope_spanmetrics_truncated_spans_total", reason=reason) == 2.0
    assert value(registry, "tickscope_trading_truncated_spans_total", reason=reason) == 2.0
    # Exactly at the limit: nothing counted.
    consume(s, "svc", [{"name": "op", "attributes": {f"a{i}": i for i in range(4)}}])
    assert value(registry, "tickscope_spanmetrics_truncated_spans_total", reason=reason) == 2.0


def test_caches_stay_bounded_in_bytes_under_huge_attribute_values() -> None:
    s, _, _, _ = stream()
    cache = s.attributes
    before = dict(spanview.STATUS_BY_BYTES)
    for i in range(30):
        attributes = {
            "exchange.id": "binance",
            "ccxt.method": f"m{i}" + "q" * MB,  # wanted: held cut
            "free.text": f"{i}" + "z" * MB,  # not wanted: never held
        }
        span = {"name": "ccxt.x", "attributes": attributes, "status": ERROR, "message": "d" * MB}
        consume(s, "svc", [span])
    # 4 bytes per character of the 128-character limit, plus key and framing: 768.
    assert max(len(raw) for raw in cache.entries) <= 768
    assert sum(len(raw) for raw in cache.entries) <= 8192 * 768
    assert max(len(v) for _, v in cache._pairs.values()) == 129
    assert spanview.STATUS_BY_BYTES.keys() - before.keys() <= {
        raw for raw in spanview.STATUS_BY_BYTES if len(raw) <= 16
    }
    held = sum(len(name) for shapes in s._shapes.values() for name, *_ in shapes)
    assert held <= 30 * 128


# -- property tests: never raises, counts exactly, always parses -----------------------

KEYS = [
    "exchange.id",
    "ccxt.method",
    "error.type",
    "trading.order.side",
    "trading.order.type",
    "http.response.status_code",
    "trading.ratelimit.used",
    "trading.ratelimit.limit",
    "trading.symbol",
    "service.name",
]


def anyvalues() -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        st.text(max_size=40).map(lambda v: AnyValue(string_value=v)),
        st.sampled_from(["1200", "300", "nan", "inf", "-1", "0", "1e309", ""]).map(
            lambda v: AnyValue(string_value=v)
        ),
        st.booleans().map(lambda v: AnyValue(bool_value=v)),
        st.integers(-(2**63), 2**63 - 1).map(lambda v: AnyValue(int_value=v)),
        st.floats(allow_nan=True, allow_infinity=True).map(lambda v: AnyValue(double_value=v)),
        st.binary(max_size=16).map(lambda v: AnyValue(bytes_value=v)),
        st.just(AnyValue()),
        st.integers(150, 400).map(lambda n: AnyValue(string_value="L" * n)),
    )

    def nest(children: st.SearchStrategy[AnyValue]) -> st.SearchStrategy[AnyValue]:
        arrays = st.lists(children, max_size=3).map(lambda vs: AnyValue(array_value={"values": vs}))
        maps = st.lists(st.tuples(st.text(max_size=5), children), max_size=3).map(
            lambda kvs: AnyValue(
                kvlist_value={"values": [KeyValue(key=k, value=v) for k, v in kvs]}
            )
        )
        return st.one_of(arrays, maps)

    return st.recursive(scalars, nest, max_leaves=6)


attribute_sets = st.lists(
    st.tuples(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), anyvalues()), max_size=12
)
span_specs = st.fixed_dictionaries(
    {
        "name": st.one_of(
            st.sampled_from(["ccxt.create_order", "ccxt.fetch_ticker", ""]),
            st.text(max_size=30),
            st.integers(120, 300).map(lambda n: "n" * n),
        ),
        "kind": st.integers(0, 9),
        "status": st.integers(0, 5),
        "message": st.text(max_size=20),
        "seconds": st.floats(-1.0, 30.0),
        "attributes": attribute_sets,
    }
)
batches = st.lists(
    st.tuples(
        st.lists(st.tuples(st.sampled_from(KEYS), anyvalues()), max_size=4),
        st.lists(span_specs, max_size=8),
    ),
    min_size=1,
    max_size=3,
)


def build(resources: list[tuple[list[tuple[str, AnyValue]], list[dict[str, Any]]]]) -> bytes:
    req = ExportTraceServiceRequest()
    for resource, specs in resources:
        rs = req.resource_spans.add()
        rs.resource.attributes.extend(KeyValue(key=k, value=v) for k, v in resource)
        ss = rs.scope_spans.add()
        for i, spec in enumerate(specs):
            span = ss.spans.add()
            span.trace_id = os.urandom(16)
            span.span_id = os.urandom(8)
            span.name = spec["name"]
            span.kind = spec["kind"]  # type: ignore[assignment]
            span.start_time_unix_nano = BASE_NS + i
            span.end_time_unix_nano = max(0, BASE_NS + i + round(spec["seconds"] * 1e9))
            span.attributes.extend(KeyValue(key=k, value=v) for k, v in spec["attributes"])
            span.status.code = spec["status"]  # type: ignore[assignment]
            span.status.message = spec["message"]
    return req.SerializeToString()


def check_exposition(metrics: SpanMetrics, trading: TradingMetrics, spans: int) -> None:
    text = rendered(metrics, trading, openmetrics=False)
    families = {f.name: f for f in parse_text(text)}
    calls = families.get("traces_span_metrics_calls")
    total = sum(s.value for s in calls.samples) if calls is not None else 0.0
    assert total == spans
    om = {f.name: f for f in parse_openmetrics(rendered(metrics, trading, openmetrics=True))}
    calls_om = om.get("traces_span_metrics_calls")
    total_om = (
        sum(s.value for s in calls_om.samples if s.name.endswith("_total")) if calls_om else 0.0
    )
    assert total_om == spans
    for family in families.values():
        for sample in family.samples:
            assert math.isfinite(sample.value) or sample.labels.get("le") == "+Inf"
            assert all(len(v) <= 128 for v in sample.labels.values())


@settings(
    derandomize=True,
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(requests=st.lists(batches, min_size=1, max_size=3))
def test_consumers_never_raise_count_exactly_and_render_parseable_exposition(
    requests: list[list[tuple[list[tuple[str, AnyValue]], list[dict[str, Any]]]]],
) -> None:
    s, metrics, trading, registry = stream({"max_series": 50}, {"max_series": 20})
    fed = 0
    for resources in requests:
        view = decode_traces(build(resources))
        fed += s.consume_view(view)
    assert fed == sum(len(specs) for resources in requests for _, specs in resources)
    assert s.failed == 0
    assert value(registry, "tickscope_spanstream_failed_spans_total") == 0.0
    check_exposition(metrics, trading, fed)
