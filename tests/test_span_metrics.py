"""Span metrics and trading metrics over the real sidecar: cardinality limit, expiry,
exposition validity, trading-derived metrics."""

from __future__ import annotations

import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers.binaries import promtool_check_metrics
from helpers.otlp import PROTOBUF, many, request
from helpers.sidecar import SidecarProcess, StartSidecar, http_post, sample_value
from helpers.spanmetrics import calls, wait_for_calls

ERROR = 2


def post(s: SidecarProcess, body: bytes) -> None:
    response = http_post(s.otlp_http_url + "/v1/traces", body, PROTOBUF)
    assert response.status == 200, response.body


def test_cardinality_limit_with_10000_label_sets(start_sidecar: StartSidecar) -> None:
    s = start_sidecar({"host": {"enabled": False}})
    # 10,000 distinct span names: 10,000 label sets against the default limit of 2,000.
    for chunk in range(10):
        spans = [{"name": f"op.{chunk * 1000 + i}", "seconds": 0.01} for i in range(1000)]
        post(s, request("svc-card", spans).SerializeToString())
    families = s.families_when(
        lambda f: sample_value(f["tickscope_pipeline_processed_spans"]) >= 10000,
        "all spans processed",
    )
    label_sets = {
        tuple(sorted(sample.labels.items()))
        for sample in families["traces_span_metrics_calls"].samples
    }
    overflow = [dict(ls) for ls in label_sets if ("otel_metric_overflow", "true") in ls]
    assert overflow == [{"otel_metric_overflow": "true"}]
    assert len(label_sets) == 2000 + 1
    assert sample_value(families["tickscope_spanmetrics_series"]) == 2001
    assert sample_value(families["tickscope_spanmetrics_overflow"]) == 8000
    over = [
        x
        for x in families["traces_span_metrics_calls"].samples
        if x.labels.get("otel_metric_overflow") == "true"
    ]
    assert over[0].value == 8000
    # Every span is still counted somewhere: nothing is lost to the limit.
    assert sum(x.value for x in families["traces_span_metrics_calls"].samples) == 10000
    # The exposition stays valid.
    assert promtool_check_metrics(s.metrics_text())[0] == []
    om = s.get("/metrics", {"Accept": "application/openmetrics-text; version=1.0.0"})
    assert om.status == 200 and om.text.endswith("# EOF\n")


def test_series_expire_and_make_room(start_sidecar: StartSidecar) -> None:
    s = start_sidecar(
        {
            "host": {"enabled": False},
            "spanmetrics": {"series_expiry": "1s", "max_series": 3},
            # Expiry happens at render: a 1 s exposition cache would age a new series
            # past this 1 s expiry before its first render.
            "server": {"metrics_cache_ttl": 0},
        }
    )
    post(s, request("svc-exp", [{"name": f"old.{i}"} for i in range(3)]).SerializeToString())
    wait_for_calls(s, "svc-exp", 3)
    post(s, request("svc-exp", [{"name": "new.0"}]).SerializeToString())
    families = s.families_when(
        lambda f: sample_value(f["tickscope_spanmetrics_overflow"]) == 1, "overflow"
    )
    assert calls(families, "svc-exp", span_name="new.0") == 0
    # Without any traffic, a scrape after the expiry drops the idle label sets...
    time.sleep(1.3)
    families = s.families_when(
        lambda f: sample_value(f["tickscope_spanmetrics_series"]) == 0, "expiry"
    )
    assert (
        "traces_span_metrics_calls" not in families
        or not families["traces_span_metrics_calls"].samples
    )
    assert (
        sample_value(families["tickscope_spanmetrics_expired_series"]) == 4
    )  # 3 + the overflow series
    # ... and a new label set gets its own series again.
    post(s, request("svc-exp", [{"name": "new.0"}]).SerializeToString())
    families = wait_for_calls(s, "svc-exp", 1, span_name="new.0")
    assert calls(families, "svc-exp", span_name="new.0") == 1


def test_dimensions_from_resource_and_defaults(start_sidecar: StartSidecar) -> None:
    s = start_sidecar(
        {
            "host": {"enabled": False},
            "spanmetrics": {
                "dimensions": [
                    {"name": "exchange", "attribute": "exchange.id", "default": "none"},
                    {"name": "region", "attribute": "cloud.region"},
                ]
            },
        }
    )
    post(
        s,
        request(
            "svc-dims",
            [
                {"name": "a", "attributes": {"exchange.id": "binance"}},
                {"name": "b", "attributes": {"cloud.region": "span-region"}},
            ],
            resource={"cloud.region": "eu-west-1"},
        ).SerializeToString(),
    )
    families = wait_for_calls(s, "svc-dims", 2)
    assert calls(families, "svc-dims", span_name="a", exchange="binance", region="eu-west-1") == 1
    assert calls(families, "svc-dims", span_name="b", exchange="none", region="span-region") == 1
    names = {
        tuple(sorted(x.labels))
        for x in families["traces_span_metrics_calls"].samples
        if x.labels.get("service_name") == "svc-dims"
    }
    assert names == {
        ("exchange", "region", "service_name", "span_kind", "span_name", "status_code")
    }


def test_trading_metrics_from_shim_spans(start_sidecar: StartSidecar) -> None:
    s = start_sidecar({"host": {"enabled": False}})

    def order(
        side: str, kind: str, seconds: float, error: str | None = None, method: str = "create_order"
    ) -> dict:
        attrs = {
            "exchange.id": "binance",
            "ccxt.method": method,
            "trading.order.side": side,
            "trading.order.type": kind,
        }
        spec = {"name": f"ccxt.{method}", "seconds": seconds, "attributes": attrs}
        if error:
            attrs["error.type"] = error
            spec["status"] = ERROR
        return spec

    spans = [
        order("buy", "limit", 0.05),
        order("buy", "limit", 0.07),
        order("sell", "market", 0.3, method="create_market_sell_order"),
        order("buy", "limit", 0.02, error="InsufficientFunds"),
        order("sell", "limit", 5.0, error="RequestTimeout"),
        {
            "name": "ccxt.fetch_ticker",
            "attributes": {
                "exchange.id": "binance",
                "ccxt.method": "fetch_ticker",
                "error.type": "RateLimitExceeded",
                "http.response.status_code": 429,
            },
            "status": ERROR,
        },
        {
            "name": "ccxt.fetch_ticker",
            "attributes": {
                "exchange.id": "binance",
                "ccxt.method": "fetch_ticker",
                "error.type": "DDoSProtection",
                "http.response.status_code": 418,
            },
            "status": ERROR,
        },
        {
            "name": "ccxt.fetch_ticker",
            "attributes": {
                "exchange.id": "kraken",
                "ccxt.method": "fetch_ticker",
                "trading.ratelimit.used": 300,
                "trading.ratelimit.limit": 1200,
            },
        },
        {
            "name": "ccxt.fetch_balance",
            "attributes": {
                "exchange.id": "kraken",
                "ccxt.method": "fetch_balance",
                "trading.ratelimit.used": 900,
                "trading.ratelimit.limit": 1200,
            },
        },
        {
            "name": "ccxt.fetch_ticker",
            "attributes": {"exchange.id": "kraken", "ccxt.method": "fetch_ticker"},
        },
        {"name": "engine.step"},  # not a ccxt span: no trading metrics
    ]
    post(s, request("svc-trading", spans).SerializeToString())
    families = wait_for_calls(s, "svc-trading", len(spans))
    orders = families["trading_orders"]
    assert (
        sample_value(orders, exchange="binance", side="buy", type="limit", outcome="accepted") == 2
    )
    assert (
        sample_value(orders, exchange="binance", side="sell", type="market", outcome="accepted")
        == 1
    )
    assert (
        sample_value(orders, exchange="binance", side="buy", type="limit", outcome="rejected") == 1
    )
    assert sample_value(orders, exchange="binance", side="sell", type="limit", outcome="error") == 1
    latency = families["trading_order_latency_seconds"]
    assert (
        sample_value(
            latency, "trading_order_latency_seconds_count", exchange="binance", outcome="accepted"
        )
        == 3
    )
    assert (
        sample_value(
            latency,
            "trading_order_latency_seconds_bucket",
            exchange="binance",
            outcome="accepted",
            le="0.1",
        )
        == 2
    )
    assert (
        sample_value(
            latency,
            "trading_order_latency_seconds_bucket",
            exchange="binance",
            outcome="error",
            le="2.0",
        )
        == 0
    )
    assert sample_value(families["exchange_rate_limit_hits"], exchange="binance") == 2
    errors = families["exchange_api_errors"]
    assert (
        sample_value(
            errors, exchange="binance", method="fetch_ticker", error_type="RateLimitExceeded"
        )
        == 1
    )
    assert (
        sample_value(errors, exchange="binance", method="fetch_ticker", error_type="DDoSProtection")
        == 1
    )
    assert (
        sample_value(
            errors, exchange="binance", method="create_order", error_type="InsufficientFunds"
        )
        == 1
    )
    assert (
        sample_value(errors, exchange="binance", method="create_order", error_type="RequestTimeout")
        == 1
    )
    assert not [x for x in errors.samples if x.labels["exchange"] == "kraken"]
    # kraken never hit a limit, but its counter is served at 0 so that the first hit
    # is an increase Prometheus can see; non-ccxt spans create no exchange.
    hits = {
        x.labels["exchange"]: x.value
        for x in families["exchange_rate_limit_hits"].samples
        if x.name.endswith("_total")
    }
    assert hits == {"binance": 2, "kraken": 0}
    # The newest span with rate-limit headers wins: 900 / 1200.
    assert sample_value(
        families["exchange_rate_limit_used_ratio"], exchange="kraken"
    ) == pytest.approx(0.75)
    om = s.families(openmetrics=True)
    exemplars = [
        x.exemplar for x in om["trading_order_latency_seconds"].samples if x.exemplar is not None
    ]
    assert exemplars and all(len(e.labels["trace_id"]) == 32 for e in exemplars)


def test_rate_limit_ratio_goes_stale(start_sidecar: StartSidecar) -> None:
    s = start_sidecar({"host": {"enabled": False}, "trading": {"rate_limit_ratio_ttl": "1s"}})
    post(
        s,
        request(
            "svc-ratio",
            [
                {
                    "name": "ccxt.fetch_ticker",
                    "attributes": {
                        "exchange.id": "okx",
                        "ccxt.method": "fetch_ticker",
                        "trading.ratelimit.used": 19,
                        "trading.ratelimit.limit": 20,
                    },
                }
            ],
        ).SerializeToString(),
    )
    families = wait_for_calls(s, "svc-ratio", 1)
    assert sample_value(
        families["exchange_rate_limit_used_ratio"], exchange="okx"
    ) == pytest.approx(0.95)
    time.sleep(1.3)
    s.wait_until(
        lambda: "exchange_rate_limit_used_ratio" not in s.families(), what="stale ratio dropped"
    )


def test_text_and_openmetrics_expositions_parse(start_sidecar: StartSidecar) -> None:
    s = start_sidecar({"host": {"enabled": False}})
    post(
        s,
        request(
            "svc-parse",
            many('needs "escaping"\\ and\nnewlines', 3, attributes={"exchange.id": 'bin"ance'}),
        ).SerializeToString(),
    )
    families = wait_for_calls(s, "svc-parse", 3)
    sample = next(
        x
        for x in families["traces_span_metrics_calls"].samples
        if x.labels.get("service_name") == "svc-parse"
    )
    assert sample.labels["span_name"] == 'needs "escaping"\\ and\nnewlines'
    assert sample.labels["exchange"] == 'bin"ance'
    om = s.families(openmetrics=True)
    assert (
        next(
            x
            for x in om["traces_span_metrics_calls"].samples
            if x.labels.get("service_name") == "svc-parse"
        ).value
        == 3
    )
    text = s.metrics_text()
    assert len(list(text_string_to_metric_families(text))) > 10


def test_span_path_contract_types(start_sidecar: StartSidecar) -> None:
    from helpers.contract import (
        SPAN_COUNTERS,
        SPAN_HISTOGRAMS,
        SPAN_PATH_SELF,
        TRADING_COUNTERS,
        TRADING_GAUGES,
        TRADING_HISTOGRAMS,
    )

    s = start_sidecar({"host": {"enabled": False}})
    attrs = {
        "exchange.id": "binance",
        "ccxt.method": "create_order",
        "error.type": "RateLimitExceeded",
        "trading.ratelimit.used": 5,
        "trading.ratelimit.limit": 10,
    }
    post(
        s,
        request(
            "svc-contract", [{"name": "ccxt.create_order", "attributes": attrs, "status": ERROR}]
        ).SerializeToString(),
    )
    for openmetrics in (False, True):
        families = (
            s.families_when(lambda f: "trading_orders" in f, "trading metrics")
            if not openmetrics
            else s.families(openmetrics=True)
        )
        for name in SPAN_COUNTERS + TRADING_COUNTERS:
            assert families[name].type == "counter", name
        for name in SPAN_HISTOGRAMS + TRADING_HISTOGRAMS:
            assert families[name].type == "histogram", name
        for name in TRADING_GAUGES:
            assert families[name].type == "gauge", name
    text = s.metrics_text()
    for name in SPAN_PATH_SELF:
        if not name.startswith("tickscope_forward_"):  # only with forwarding on (test_forward)
            assert f"\n{name}" in text, name


def test_unknown_enum_values_do_not_duplicate_series(start_sidecar: StartSidecar) -> None:
    s = start_sidecar({"host": {"enabled": False}})
    post(
        s,
        request(
            "svc-enum",
            [
                {"name": "op", "kind": 0},
                {"name": "op", "kind": 7},
                {"name": "op", "kind": 0, "status": 5},
            ],
        ).SerializeToString(),
    )
    families = wait_for_calls(s, "svc-enum", 3)
    samples = [
        x
        for x in families["traces_span_metrics_calls"].samples
        if x.labels.get("service_name") == "svc-enum"
    ]
    assert len(samples) == 1
    assert samples[0].labels["span_kind"] == "SPAN_KIND_UNSPECIFIED"
    assert samples[0].labels["status_code"] == "STATUS_CODE_UNSET"
    assert samples[0].value == 3
