"""OTLP metrics ingestion: the real SDK MeterProvider with the real OTLP metric
exporters (HTTP and gRPC, cumulative and delta) -> the sidecar -> /metrics."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import (
    OTLPMetricExporter as GRPCMetricExporter,
)
from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    MeterProvider,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import AggregationTemporality, PeriodicExportingMetricReader
from opentelemetry.sdk.metrics.view import ExponentialBucketHistogramAggregation, View
from opentelemetry.sdk.resources import Resource
from prometheus_client.metrics_core import Metric

from helpers.binaries import promtool_check_metrics
from helpers.otlp import kv
from helpers.sidecar import SidecarProcess, StartSidecar, http_post, sample_value

PROTOBUF = {"Content-Type": "application/x-protobuf"}
DELTA = {
    Counter: AggregationTemporality.DELTA,
    Histogram: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableGauge: AggregationTemporality.CUMULATIVE,
}


@pytest.fixture(scope="module")
def sidecar(start_module_sidecar: StartSidecar) -> SidecarProcess:
    s = start_module_sidecar({"host": {"enabled": False}})
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready")
    return s


def provider(
    exporter: Any, service: str, temporality: dict | None = None
) -> tuple[MeterProvider, PeriodicExportingMetricReader]:
    if temporality is not None:
        exporter._preferred_temporality = (
            temporality  # the exporter's documented knob, set after construction
        )
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    mp = MeterProvider(
        resource=Resource.create(
            {
                "service.name": service,
                "service.instance.id": "i-1",
                "deployment.environment": "test",
            }
        ),
        metric_readers=[reader],
        views=[
            View(
                instrument_name="order.size",
                aggregation=ExponentialBucketHistogramAggregation(max_size=20),
            )
        ],
    )
    return mp, reader


def record_everything(mp: MeterProvider, gauge_value: list[float]) -> None:
    meter = mp.get_meter("test.meter", "1.2")
    counter = meter.create_counter("orders.placed", unit="{order}", description="Orders sent.")
    counter.add(5, {"exchange": "binance", "side": "buy"})
    counter.add(2, {"exchange": "binance", "side": "sell"})
    updown = meter.create_up_down_counter("positions.open", unit="{position}")
    updown.add(3, {"exchange": "binance"})
    updown.add(-1, {"exchange": "binance"})
    histogram = meter.create_histogram("loop.duration", unit="s", description="Loop time.")
    for value in (0.002, 0.03, 0.03, 7.0):
        histogram.record(value, {"loop": "main"})
    expo = meter.create_histogram("order.size", unit="{USDT}")
    for value in (1.0, 10.0, 100.0, 100.0):
        expo.record(value)

    def observe(_: CallbackOptions) -> list[Observation]:
        return [Observation(gauge_value[0], {"queue": "orders"})]

    meter.create_observable_gauge("queue.depth", [observe], unit="{item}")


def labels_of(family: Metric, service: str) -> list[dict[str, str]]:
    return [s.labels for s in family.samples if s.labels.get("job") == service]


def value(
    families: dict[str, Metric], family: str, sample: str | None = None, **labels: str
) -> float:
    return sample_value(families[family], sample, **labels)


def check_translation(
    families: dict[str, Metric], service: str, counter_total: float, buy: float
) -> None:
    assert families["orders_placed"].type == "counter"
    assert (
        value(
            families,
            "orders_placed",
            "orders_placed_total",
            job=service,
            side="buy",
            exchange="binance",
        )
        == buy
    )
    assert (
        value(families, "orders_placed", "orders_placed_total", job=service, side="sell")
        == counter_total - buy
    )
    sample = next(s for s in families["orders_placed"].samples if s.labels.get("job") == service)
    assert sample.labels["instance"] == "i-1"
    assert (
        sample.labels["otel_scope_name"] == "test.meter"
        and sample.labels["otel_scope_version"] == "1.2"
    )
    assert families["positions_open"].type == "gauge"
    assert value(families, "positions_open", job=service) == 2
    hist = families["loop_duration_seconds"]
    assert hist.type == "histogram"
    assert (
        value(
            families,
            "loop_duration_seconds",
            "loop_duration_seconds_count",
            job=service,
            loop="main",
        )
        == 4
    )
    assert value(
        families, "loop_duration_seconds", "loop_duration_seconds_sum", job=service, loop="main"
    ) == pytest.approx(7.062)
    # The SDK's default buckets: 0, 5, 10, 25, ...
    assert (
        value(
            families,
            "loop_duration_seconds",
            "loop_duration_seconds_bucket",
            job=service,
            loop="main",
            le="0.0",
        )
        == 0
    )
    assert (
        value(
            families,
            "loop_duration_seconds",
            "loop_duration_seconds_bucket",
            job=service,
            loop="main",
            le="5.0",
        )
        == 3
    )
    assert (
        value(
            families,
            "loop_duration_seconds",
            "loop_duration_seconds_bucket",
            job=service,
            loop="main",
            le="+Inf",
        )
        == 4
    )
    expo = families["order_size"]
    assert expo.type == "histogram"
    assert value(families, "order_size", "order_size_count", job=service) == 4
    buckets = sorted(
        (float(s.labels["le"]), s.value)
        for s in expo.samples
        if s.name == "order_size_bucket" and s.labels.get("job") == service
    )
    # Every value lies at or below the le of the bucket that first counts it.
    assert next(c for le, c in buckets if le >= 100.0) == 4
    assert next(c for le, c in buckets if le >= 10.0) >= 2
    assert max(c for le, c in buckets if le < 1.0) == 0
    assert families["queue_depth"].type == "gauge"
    assert value(families, "queue_depth", job=service, queue="orders") == 42
    target = [s for s in families["target_info"].samples if s.labels.get("job") == service]
    assert (
        target
        and target[0].labels["deployment_environment"] == "test"
        and target[0].labels["instance"] == "i-1"
    )
    assert "service_name" not in target[0].labels


def test_sdk_http_cumulative(sidecar: SidecarProcess) -> None:
    mp, reader = provider(
        OTLPMetricExporter(endpoint=sidecar.otlp_http_url + "/v1/metrics"), "m-http-cum"
    )
    record_everything(mp, [42.0])
    reader.collect()
    mp.force_flush()
    families = sidecar.families_when(
        lambda f: "orders_placed" in f and labels_of(f["orders_placed"], "m-http-cum"), "metrics"
    )
    check_translation(families, "m-http-cum", 7, 5)
    # A second export of the same cumulative state changes nothing.
    mp.force_flush()
    check_translation(sidecar.families(), "m-http-cum", 7, 5)
    mp.shutdown()


def test_sdk_http_delta_is_accumulated(sidecar: SidecarProcess) -> None:
    mp, _ = provider(
        OTLPMetricExporter(endpoint=sidecar.otlp_http_url + "/v1/metrics"), "m-http-delta", DELTA
    )
    record_everything(mp, [42.0])
    mp.force_flush()
    meter = mp.get_meter("test.meter", "1.2")
    meter.create_counter("orders.placed", unit="{order}").add(
        3, {"exchange": "binance", "side": "buy"}
    )
    mp.force_flush()
    families = sidecar.families_when(
        lambda f: (
            "orders_placed" in f
            and sum(
                s.value
                for s in f["orders_placed"].samples
                if s.labels.get("job") == "m-http-delta" and s.name.endswith("_total")
            )
            == 10
        ),
        "delta counters added up",
    )
    check_translation(families, "m-http-delta", 10, 8)
    mp.shutdown()


def test_sdk_grpc(sidecar: SidecarProcess) -> None:
    mp, _ = provider(GRPCMetricExporter(endpoint=sidecar.otlp_grpc_target, insecure=True), "m-grpc")
    record_everything(mp, [42.0])
    mp.force_flush()
    families = sidecar.families_when(
        lambda f: "orders_placed" in f and labels_of(f["orders_placed"], "m-grpc"),
        "metrics over gRPC",
    )
    check_translation(families, "m-grpc", 7, 5)
    mp.shutdown()


def point_request(
    service: str, start: int, time_ns: int, value: float, name: str = "engine.fills"
) -> bytes:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", service))
    metric = rm.scope_metrics.add().metrics.add()
    metric.name = name
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = (
        metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
    )
    point = metric.sum.data_points.add()
    point.start_time_unix_nano, point.time_unix_nano, point.as_double = start, time_ns, value
    return req.SerializeToString()


def fills(s: SidecarProcess, service: str) -> float:
    f = s.families()
    return (
        value(f, "engine_fills", "engine_fills_total", job=service) if "engine_fills" in f else -1
    )


def test_engine_restart_never_makes_a_counter_go_down(sidecar: SidecarProcess) -> None:
    url = sidecar.otlp_http_url + "/v1/metrics"
    seen = []
    for (start, t, v), expected in zip(
        (
            (1000, 2000, 10.0),
            (1000, 3000, 20.0),
            (5000, 6000, 5.0),
            (5000, 7000, 30.0),
            (9000, 9500, 1.0),
        ),
        (10.0, 20.0, 25.0, 50.0, 51.0),
        strict=True,
    ):
        assert http_post(url, point_request("m-restart", start, t, v), PROTOBUF).status == 200
        # Waited for (a scrape may come from a short-lived cache), then read once more.
        sidecar.wait_until(lambda e=expected: fills(sidecar, "m-restart") == e, what="fills")
        seen.append(fills(sidecar, "m-restart"))
    # 10, 20, then a restart at 5 (20 + 5), 30 (20 + 30: the new incarnation passed the old), restart again.
    assert seen == [10.0, 20.0, 25.0, 50.0, 51.0]
    assert all(b >= a for a, b in itertools.pairwise(seen))


def test_bad_metrics_requests(sidecar: SidecarProcess) -> None:
    url = sidecar.otlp_http_url + "/v1/metrics"
    r = http_post(url, b"\xff\xfe not protobuf", PROTOBUF)
    assert r.status == 400
    r = http_post(url, b'{"resourceMetrics": [', {"Content-Type": "application/json"})
    assert r.status == 400 and json.loads(r.body)["code"] == 3
    # A delta non-monotonic sum is dropped (the specification's rule): partial success.
    req = ExportMetricsServiceRequest()
    metric = req.resource_metrics.add().scope_metrics.add().metrics.add()
    metric.name = "bad.delta.updown"
    metric.sum.aggregation_temporality = (
        metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    )
    metric.sum.data_points.add().as_int = 4
    r = http_post(url, req.SerializeToString(), PROTOBUF)
    assert r.status == 200
    partial = ExportMetricsServiceResponse.FromString(r.body).partial_success
    assert partial.rejected_data_points == 1 and "delta non-monotonic" in partial.error_message
    # A metric that would shadow one of tickscope's own names is refused.
    clash = ExportMetricsServiceRequest()
    m = clash.resource_metrics.add().scope_metrics.add().metrics.add()
    m.name, m.gauge.data_points.add().as_double = "node.load1", 99.0
    partial = ExportMetricsServiceResponse.FromString(
        http_post(url, clash.SerializeToString(), PROTOBUF).body
    ).partial_success
    assert partial.rejected_data_points == 1
    counted = ("delta_non_monotonic_sum", "name_conflict")
    f = sidecar.families_when(
        lambda f: {
            s.labels["reason"]
            for s in f["tickscope_receiver_rejected_points"].samples
            if s.labels.get("receiver") == "otlp_http"
        }.issuperset(counted),
        what="rejections counted",
    )
    assert (
        sample_value(
            f["tickscope_receiver_rejected_points"],
            receiver="otlp_http",
            reason="delta_non_monotonic_sum",
        )
        == 1
    )
    assert (
        sample_value(
            f["tickscope_receiver_rejected_points"], receiver="otlp_http", reason="name_conflict"
        )
        == 1
    )
    assert sidecar.get("/healthz").status == 200


def test_json_metrics(sidecar: SidecarProcess) -> None:
    body = {
        "resourceMetrics": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "m-json"}}]},
            "scopeMetrics": [{"scope": {"name": "json.scope"}, "metrics": [{
                "name": "my.gauge", "unit": "1", "futureField": True,
                "gauge": {"dataPoints": [{"asDouble": 0.25, "timeUnixNano": "1544712660300000000",
                                          "attributes": [{"key": "a.b", "value": {"stringValue": "x"}},
                                                         {"key": "a_b", "value": {"intValue": "7"}}]}]},
            }]}],
        }]
    }  # fmt: skip
    r = http_post(
        sidecar.otlp_http_url + "/v1/metrics",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    assert r.status == 200, r.body
    f = sidecar.families_when(lambda f: "my_gauge_ratio" in f, "json gauge")
    # "a.b" and "a_b" both become a_b: merged, in the order of the original keys.
    assert value(f, "my_gauge_ratio", job="m-json", a_b="x;7", otel_scope_name="json.scope") == 0.25


def test_staleness_cardinality_and_promtool(start_sidecar: StartSidecar) -> None:
    s = start_sidecar(
        {"host": {"enabled": False}, "metrics": {"stale_after": "1s", "max_series_per_metric": 3}}
    )
    url = s.otlp_http_url + "/v1/metrics"
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.append(kv("service.name", "m-limits"))
    metric = rm.scope_metrics.add().metrics.add()
    metric.name = "requests"
    metric.sum.is_monotonic = True
    metric.sum.aggregation_temporality = (
        metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
    )
    for i in range(10):
        p = metric.sum.data_points.add()
        p.as_int, p.time_unix_nano = 1, 1000 + i
        p.attributes.append(kv("user", f"u{i}"))
    assert http_post(url, req.SerializeToString(), PROTOBUF).status == 200
    f = s.families_when(lambda f: "requests" in f, what="requests served")
    samples = [x for x in f["requests"].samples if x.name == "requests_total"]
    assert len(samples) == 4  # 3 label sets + the overflow series
    over = [x for x in samples if x.labels.get("otel_metric_overflow") == "true"]
    assert over and over[0].value == 7
    assert sample_value(f["tickscope_metrics_overflow_points"], metric="requests_total") == 7
    assert promtool_check_metrics(s.metrics_text())[0] == []
    time.sleep(1.3)
    s.wait_until(lambda: "requests" not in s.families(), what="stale series gone")
    s.wait_until(
        lambda: sample_value(s.families()["tickscope_metrics_expired_series"]) == 4,
        what="expired counted",
    )
    assert sample_value(s.families()["tickscope_metrics_expired_series"]) == 4
