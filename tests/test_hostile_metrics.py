"""Hostile OTLP metrics (issue 11): whatever points an engine sends, every /metrics
stays valid for Prometheus in both formats, the receivers answer 200 / OK with a
partial success that counts what was refused, and the sidecar keeps serving.

In-process: helpers.otlp_metrics.hostile_request() (every point found to break an
exposition, beside valid ones) through the store, the result checked with
prometheus_client's text and OpenMetrics parsers and `promtool check metrics`.
Through a real sidecar: the same request over OTLP/HTTP and gRPC, and the
no-explicit-bounds histograms of defect 12, which got 500 / INTERNAL.
"""

from __future__ import annotations

import decimal
import random
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceResponse,
)
from prometheus_client import CollectorRegistry
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from helpers.binaries import promtool_check_metrics
from helpers.otlp_metrics import (
    exemplar,
    gauge,
    histogram,
    histogram_point,
    hostile_request,
    number_point,
    request,
    sum_metric,
)
from helpers.sidecar import SidecarProcess, StartSidecar, http_post, sample_value
from tickscope.exporters.otlpmetrics import MetricsConfig, MetricStore
from tickscope.exporters.otlpmetrics.expohisto import BoundCache, bound
from tickscope.exposition.text import Lines

PROTOBUF = {"Content-Type": "application/x-protobuf"}
METHOD = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
TRACE = bytes.fromhex("0a" * 16)
SPAN = bytes.fromhex("0b" * 8)

# What the store makes of hostile_request(), worked out point by point:
# invalid_buckets: hostile.expo b (scale -10 index 1: past 2^1024), d (offset 2^31 - 1),
# g (scale 21), h (NaN zero threshold); hostile.hist a (unsorted), b (NaN bound),
# c (+Inf bound), d (count 5 for 2 observations); hostile.quantiles b (quantile 1.5),
# c (quantile 0.5 twice). invalid_value: hostile.quantiles a (a negative quantile value),
# hostile.neg -1 and NaN. invalid_name: the counter "total". type_conflict: the counter
# p.clash beside the gauge, the gauge hg_count beside the histogram hg. name_conflict:
# the gauge process_cpu_seconds (the sidecar's own counter's OpenMetrics family).
ACCEPTED = 18
REJECTED = {
    "invalid_buckets": 10,
    "invalid_value": 3,
    "invalid_name": 1,
    "type_conflict": 2,
    "name_conflict": 1,
}


def check_exposition(text: str, openmetrics: bool) -> int:
    """Parse with the format's prometheus_client parser (every sample line becomes a
    sample); for the text format, promtool too. The number of samples."""
    sample_lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    if openmetrics:
        body = text if text.endswith("# EOF\n") else text + "# EOF\n"
        families = list(parse_openmetrics(body))
    else:
        families = list(parse_text(text))
        findings, code = promtool_check_metrics(text)
        assert (findings, code) == ([], 0), findings
    samples = sum(len(f.samples) for f in families)
    assert samples == len(sample_lines)
    return samples


@pytest.mark.parametrize("max_buckets", [160, 2])
def test_hostile_points_in_process(max_buckets: int) -> None:
    registry = CollectorRegistry()
    store = MetricStore(MetricsConfig(max_exponential_buckets=max_buckets), registry)
    for _ in range(2):  # the same request twice: state built on state stays valid
        result = store.ingest(hostile_request())
        assert (result.accepted, dict(result.rejected)) == (ACCEPTED, REJECTED)
    assert store.series_count() == ACCEPTED  # a series for each accepted point
    repaired = "tickscope_metrics_repaired_points_total"
    # le on a histogram, quantile on a summary, __name__ and le on a gauge; twice.
    assert registry.get_sample_value(repaired, {"reason": "reserved_label"}) == 6.0
    # The 100-byte ids on hostile.hist (key_le) and hostile.inf; twice.
    assert registry.get_sample_value(repaired, {"reason": "invalid_exemplar"}) == 4.0
    for openmetrics in (False, True):
        out = Lines()
        store.render(out, openmetrics, None)
        text = "".join(out)
        assert 'le="+Inf"' in text and "-0.0" not in text
        # 67 samples: target_info 1; hostile_expo a 5, c 4, e 5, f 6, i 6, j 5; hostile_hist
        # e 4, f 3, g 5, key_le 4, i 3; hostile_delta 3; hostile_quantiles 6; hostile_inf,
        # hostile_level, p_clash 1 each; hg 4. At max_exponential_buckets 2 (scale -10),
        # expo f and i lose a bucket each: 65. OpenMetrics leaves out 8: _count and _sum
        # of expo f (negative buckets), hist e (a negative sum) and g (negative buckets),
        # hist f's _count (no sum), the key_quantile summary's negative _sum.
        samples = check_exposition(text, openmetrics)
        expected = {(False, 160): 67, (True, 160): 59, (False, 2): 65, (True, 2): 57}
        assert samples == expected[(openmetrics, max_buckets)]


@pytest.fixture(scope="module")
def sidecar(start_module_sidecar: StartSidecar) -> SidecarProcess:
    s = start_module_sidecar({"host": {"enabled": False}})
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready")
    return s


def grpc_export(target: str, body: bytes) -> ExportMetricsServiceResponse:
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            METHOD,
            request_serializer=None,
            response_deserializer=ExportMetricsServiceResponse.FromString,
        )
        response: ExportMetricsServiceResponse = call(body, timeout=30)
        return response


def no_bounds(service: str) -> bytes:
    """Defect 12: histograms with no explicit bounds (valid OTLP: the +Inf bucket
    alone), cumulative with an exemplar and delta twice."""
    ex = [exemplar(0.5, TRACE, SPAN, 1.0)]
    req = request(
        histogram("nb.cumulative", histogram_point([], [2], 1.0, 1, exemplars=ex)),
        histogram("nb.delta", histogram_point([], [3], 1.5, 1), delta=True),
        resource={"service.name": service},
    )
    return req.SerializeToString()


def value(families: dict[str, Any], family: str, name: str, **labels: str) -> float:
    return sample_value(families[family], name, **labels)


def test_no_bounds_histograms_over_http_and_grpc(sidecar: SidecarProcess) -> None:
    r = http_post(sidecar.otlp_http_url + "/v1/metrics", no_bounds("nb-http"), PROTOBUF)
    assert r.status == 200, r.body
    assert not ExportMetricsServiceResponse.FromString(r.body).HasField("partial_success")
    response = grpc_export(sidecar.otlp_grpc_target, no_bounds("nb-grpc"))
    assert not response.HasField("partial_success")
    # The delta histogram once more over gRPC: 3 + 3 in its +Inf bucket.
    grpc_export(sidecar.otlp_grpc_target, no_bounds("nb-grpc"))
    f = sidecar.families_when(
        lambda f: (
            "nb_delta" in f
            and any(
                s.name == "nb_delta_count" and s.labels.get("job") == "nb-grpc" and s.value == 6.0
                for s in f["nb_delta"].samples
            )
        ),
        what="both receivers' points",
    )
    for job, cumulative, delta in (("nb-http", 2.0, 3.0), ("nb-grpc", 2.0, 6.0)):
        assert value(f, "nb_cumulative", "nb_cumulative_bucket", job=job, le="+Inf") == cumulative
        assert value(f, "nb_cumulative", "nb_cumulative_count", job=job) == cumulative
        assert value(f, "nb_delta", "nb_delta_bucket", job=job, le="+Inf") == delta
        assert value(f, "nb_delta", "nb_delta_count", job=job) == delta
    om = sidecar.families(openmetrics=True)
    (bucket,) = [s for s in om["nb_cumulative"].samples if s.labels.get("job") == "nb-http"][:1]
    assert bucket.exemplar is not None and bucket.exemplar.value == 0.5


def test_hostile_request_over_http_and_grpc(sidecar: SidecarProcess) -> None:
    body = hostile_request().SerializeToString()
    r = http_post(sidecar.otlp_http_url + "/v1/metrics", body, PROTOBUF)
    assert r.status == 200, r.body
    partial = ExportMetricsServiceResponse.FromString(r.body).partial_success
    assert partial.rejected_data_points == sum(REJECTED.values())
    assert partial.error_message.startswith("hostile.expo: buckets past the largest double")
    partial = grpc_export(sidecar.otlp_grpc_target, body).partial_success
    assert partial.rejected_data_points == sum(REJECTED.values())
    expected = {
        (r, reason): n for r in ("otlp_http", "otlp_grpc") for reason, n in REJECTED.items()
    }

    def rejected(f: dict[str, Any]) -> dict[tuple[str, str], float]:
        return {
            (s.labels["receiver"], s.labels["reason"]): s.value
            for s in f["tickscope_receiver_rejected_points"].samples
            if s.name.endswith("_total")
        }

    # Waited for, not read once: a scrape may be served from a short-lived cache.
    f = sidecar.families_when(lambda f: rejected(f) == expected, what="rejections counted")
    assert rejected(f) == expected
    for openmetrics in (False, True):
        headers = {"Accept": "application/openmetrics-text; version=1.0.0"} if openmetrics else None
        scrape = sidecar.get("/metrics", headers)
        assert scrape.status == 200
        check_exposition(scrape.text, openmetrics)
    assert sidecar.get("/healthz").status == 200


def test_exponential_bounds_exact_and_cache_bounded() -> None:
    """Every le is 2^(k/2^scale) correctly rounded (a 60-digit decimal, rounded once,
    is the reference), past-the-largest-double bounds are inf and tiny ones 0.0, and
    the bound cache never holds more than its limit."""
    context = decimal.Context(prec=60, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
    cache = BoundCache(16)
    rng = random.Random(11)  # fixed: the same pairs every run
    for _ in range(2000):
        scale = rng.randint(-10, 20)
        k = rng.randint(-1000 << max(scale, 0), 1000 << max(scale, 0))
        exponent = context.divide(decimal.Decimal(k), decimal.Decimal(2) ** scale)
        expected = float(context.power(decimal.Decimal(2), exponent))
        assert bound(scale, k, cache) == expected, (scale, k)
        assert len(cache._values) <= 16
    assert bound(0, -1) == 0.5 and bound(1, 2) == 2.0 and bound(3, 8) == 2.0
    assert bound(0, 1024) == float("inf") and bound(-10, 1) == float("inf")
    assert bound(0, -1075) == 0.0 and bound(0, -1074) == 5e-324


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        (gauge("queue.total", number_point(3.0, 10.0)),
         "queue.total: a gauge named queue_total ends in _total, which only counters may"),
        (gauge("hg_sum", number_point(3.0, 10.0)),
         "hg_sum: a gauge named hg_sum ends in _sum, which only histograms and summaries may"),
        (gauge("hg_bucket", number_point(3.0, 10.0)),
         "hg_bucket: a gauge named hg_bucket ends in _bucket, which only histograms may"),
        (sum_metric("depth.total", number_point(3.0, 10.0), monotonic=False),
         "depth.total: a gauge named depth_total ends in _total, which only counters may"),
    ],
)  # fmt: skip
def test_names_that_read_as_another_types_series_are_refused(metric: Any, message: str) -> None:
    # Found by the fuzzer (tests/fuzz/corpus/metrics_json/crash-2ceca7c2de06 and two
    # more): a gauge named x_total, hg_sum or hg_bucket is what promtool (and a reader
    # of the exposition) takes for a counter's or a histogram's series.
    registry = CollectorRegistry()
    store = MetricStore(MetricsConfig(), registry)
    result = store.ingest(request(metric, gauge("fine.level", number_point(1.0, 10.0))))
    assert (result.accepted, dict(result.rejected), result.messages) == (
        1,
        {"invalid_name": 1},
        [message],
    )
    out = Lines()
    store.render(out, False, None)
    assert promtool_check_metrics("".join(out)) == ([], 0)


def test_resource_attributes_le_and_quantile_are_renamed_on_target_info() -> None:
    # Found by the fuzzer (tests/fuzz/corpus: crash-ac75d641eb03, crash-b29767f24c77):
    # a resource attribute `quantile` or `le` went onto target_info as is.
    registry = CollectorRegistry()
    store = MetricStore(MetricsConfig(), registry)
    resource = {"service.name": "s", "quantile": "x", "le": "y"}
    result = store.ingest(request(gauge("fine.level", number_point(1.0, 10.0)), resource=resource))
    assert (result.accepted, dict(result.rejected)) == (1, {})
    out = Lines()
    store.render(out, False, None)
    text = "".join(out)
    assert 'target_info{job="s",key_le="y",key_quantile="x"} 1.0\n' in text
    assert promtool_check_metrics(text) == ([], 0)
