"""Building OTLP metrics for in-process tests: data points, metrics and
ExportMetricsServiceRequests as protobuf, straight from opentelemetry-proto (no SDK),
so that every field (start times, temporality, scale, offsets, flags) is exactly
what the test says. And a fake monotonic clock for staleness.

Times are given in seconds after BASE_NS (the points' own clock, not the fake one).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.common.v1.common_pb2 import KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2

from helpers.otlp import kv

__all__ = [
    "BASE_NS",
    "NO_RECORDED_VALUE",
    "Attributes",
    "FakeClock",
    "combine",
    "exemplar",
    "exponential_histogram",
    "exponential_point",
    "gauge",
    "histogram",
    "histogram_point",
    "hostile_request",
    "ns",
    "number_point",
    "request",
    "sum_metric",
    "summary",
    "summary_point",
]

BASE_NS = 1_700_000_000_000_000_000
NO_RECORDED_VALUE = metrics_pb2.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
CUMULATIVE = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA

AttrValue = str | int | float | bool
# Attributes as (key, value) pairs, in the order they go into the protobuf (a
# mapping works too); pairs allow the order of colliding keys to be chosen.
Attributes = Mapping[str, AttrValue] | Sequence[tuple[str, AttrValue]]


class FakeClock:
    """A monotonic clock that moves only when told to."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def ns(seconds: float) -> int:
    """A point timestamp: `seconds` after BASE_NS."""
    return BASE_NS + round(seconds * 1_000_000_000)


def _attributes(attributes: Attributes | None) -> list[KeyValue]:
    if attributes is None:
        return []
    items: Iterable[tuple[str, AttrValue]] = (
        attributes.items() if isinstance(attributes, Mapping) else attributes
    )
    return [kv(k, v) for k, v in items]


def exemplar(
    value: float, trace_id: bytes, span_id: bytes, time: float = 0.0
) -> metrics_pb2.Exemplar:
    return metrics_pb2.Exemplar(
        as_double=value, trace_id=trace_id, span_id=span_id, time_unix_nano=ns(time)
    )


def number_point(
    value: float | int,
    time: float,
    start: float | None = 0.0,
    attributes: Attributes | None = None,
    flags: int = 0,
    exemplars: Sequence[metrics_pb2.Exemplar] = (),
) -> metrics_pb2.NumberDataPoint:
    """A gauge or sum point; an int goes into as_int, a float into as_double.
    `start` None leaves start_time_unix_nano unset."""
    point = metrics_pb2.NumberDataPoint(
        time_unix_nano=ns(time),
        start_time_unix_nano=0 if start is None else ns(start),
        attributes=_attributes(attributes),
        flags=flags,
        exemplars=exemplars,
    )
    if isinstance(value, int):
        point.as_int = value
    else:
        point.as_double = value
    return point


def histogram_point(
    bounds: Sequence[float],
    counts: Sequence[int],
    sum: float | None,
    time: float,
    start: float | None = 0.0,
    attributes: Attributes | None = None,
    count: int | None = None,
    flags: int = 0,
    exemplars: Sequence[metrics_pb2.Exemplar] = (),
) -> metrics_pb2.HistogramDataPoint:
    """Explicit buckets: `counts` per bucket (not cumulative), one more than `bounds`;
    `count` defaults to their total; `sum` None leaves the optional sum unset."""
    point = metrics_pb2.HistogramDataPoint(
        time_unix_nano=ns(time),
        start_time_unix_nano=0 if start is None else ns(start),
        attributes=_attributes(attributes),
        explicit_bounds=bounds,
        bucket_counts=counts,
        count=sum_of(counts) if count is None else count,
        flags=flags,
        exemplars=exemplars,
    )
    if sum is not None:
        point.sum = sum
    return point


def sum_of(counts: Iterable[int]) -> int:
    total = 0
    for c in counts:
        total += c
    return total


def exponential_point(
    scale: int,
    time: float,
    positive: tuple[int, Sequence[int]] = (0, ()),
    negative: tuple[int, Sequence[int]] = (0, ()),
    zero_count: int = 0,
    zero_threshold: float = 0.0,
    sum: float = 0.0,
    count: int | None = None,
    start: float | None = 0.0,
    attributes: Attributes | None = None,
    flags: int = 0,
) -> metrics_pb2.ExponentialHistogramDataPoint:
    """`positive` and `negative` are (offset, bucket_counts); `count` defaults to the
    total of all buckets and the zero bucket."""
    if count is None:
        count = sum_of(positive[1]) + sum_of(negative[1]) + zero_count
    Buckets = metrics_pb2.ExponentialHistogramDataPoint.Buckets
    return metrics_pb2.ExponentialHistogramDataPoint(
        time_unix_nano=ns(time),
        start_time_unix_nano=0 if start is None else ns(start),
        attributes=_attributes(attributes),
        scale=scale,
        positive=Buckets(offset=positive[0], bucket_counts=positive[1]),
        negative=Buckets(offset=negative[0], bucket_counts=negative[1]),
        zero_count=zero_count,
        zero_threshold=zero_threshold,
        sum=sum,
        count=count,
        flags=flags,
    )


def summary_point(
    quantiles: Sequence[tuple[float, float]],
    count: int,
    sum: float,
    time: float,
    start: float | None = 0.0,
    attributes: Attributes | None = None,
    flags: int = 0,
) -> metrics_pb2.SummaryDataPoint:
    ValueAtQuantile = metrics_pb2.SummaryDataPoint.ValueAtQuantile
    return metrics_pb2.SummaryDataPoint(
        time_unix_nano=ns(time),
        start_time_unix_nano=0 if start is None else ns(start),
        attributes=_attributes(attributes),
        quantile_values=[ValueAtQuantile(quantile=q, value=v) for q, v in quantiles],
        count=count,
        sum=sum,
        flags=flags,
    )


def _metric(name: str, unit: str, description: str) -> metrics_pb2.Metric:
    return metrics_pb2.Metric(name=name, unit=unit, description=description)


def gauge(
    name: str, *points: metrics_pb2.NumberDataPoint, unit: str = "", description: str = ""
) -> metrics_pb2.Metric:
    metric = _metric(name, unit, description)
    metric.gauge.data_points.extend(points)
    return metric


def sum_metric(
    name: str,
    *points: metrics_pb2.NumberDataPoint,
    monotonic: bool = True,
    delta: bool = False,
    unit: str = "",
    description: str = "",
) -> metrics_pb2.Metric:
    metric = _metric(name, unit, description)
    metric.sum.is_monotonic = monotonic
    metric.sum.aggregation_temporality = DELTA if delta else CUMULATIVE
    metric.sum.data_points.extend(points)
    return metric


def histogram(
    name: str,
    *points: metrics_pb2.HistogramDataPoint,
    delta: bool = False,
    unit: str = "",
    description: str = "",
) -> metrics_pb2.Metric:
    metric = _metric(name, unit, description)
    metric.histogram.aggregation_temporality = DELTA if delta else CUMULATIVE
    metric.histogram.data_points.extend(points)
    return metric


def exponential_histogram(
    name: str,
    *points: metrics_pb2.ExponentialHistogramDataPoint,
    delta: bool = False,
    unit: str = "",
    description: str = "",
) -> metrics_pb2.Metric:
    metric = _metric(name, unit, description)
    metric.exponential_histogram.aggregation_temporality = DELTA if delta else CUMULATIVE
    metric.exponential_histogram.data_points.extend(points)
    return metric


def summary(
    name: str, *points: metrics_pb2.SummaryDataPoint, unit: str = "", description: str = ""
) -> metrics_pb2.Metric:
    metric = _metric(name, unit, description)
    metric.summary.data_points.extend(points)
    return metric


def request(
    *metrics: metrics_pb2.Metric,
    resource: Attributes | None = None,
    scope: tuple[str, str] | None = None,
) -> ExportMetricsServiceRequest:
    """One resource (no attributes unless given), one scope (unnamed unless given:
    (name, version)), the metrics in order."""
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(_attributes(resource))
    sm = rm.scope_metrics.add()
    if scope is not None:
        sm.scope.name, sm.scope.version = scope
    sm.metrics.extend(metrics)
    return req


def combine(*requests: ExportMetricsServiceRequest) -> ExportMetricsServiceRequest:
    """One request holding the resource_metrics of all of them, in order."""
    req = ExportMetricsServiceRequest()
    for r in requests:
        req.resource_metrics.extend(r.resource_metrics)
    return req


def hostile_request() -> ExportMetricsServiceRequest:
    """One request holding the points found to break an exposition (issue 11 defects
    1-5, 12), beside valid ones: extreme scales and offsets, bounds past the largest
    double, unsorted/NaN/infinite bounds, counts that disagree, negative and NaN
    counters, bad quantiles, reserved attribute names, names that clash, a counter
    named total, bad exemplar ids, histograms with no bounds, negative buckets and
    no sums. A store must refuse or repair each and render valid expositions."""
    nan, inf = float("nan"), float("inf")
    trace, span = bytes.fromhex("0a" * 16), bytes.fromhex("0b" * 8)
    good = [exemplar(0.5, trace, span, 1.0)]
    bad_ids = [exemplar(1.0, b"\x01" * 100, b"\x02" * 100, 1.0)]
    return request(
        exponential_histogram(
            "hostile.expo",
            exponential_point(-10, 1, positive=(-1, [2, 3]), sum=1.0, attributes={"k": "a"}),
            exponential_point(-10, 1, positive=(1, [1]), sum=1.0, attributes={"k": "b"}),
            exponential_point(0, 1, positive=(1023, [1]), sum=1e308, attributes={"k": "c"}),
            exponential_point(0, 1, negative=((1 << 31) - 1, [1]), attributes={"k": "d"}),
            exponential_point(20, 1, positive=(-(1 << 30), [1]), attributes={"k": "e"}),
            exponential_point(
                0, 1, positive=(0, [1]), negative=(0, [2]), sum=-1.5, attributes={"k": "f"}
            ),
            exponential_point(21, 1, positive=(0, [1]), attributes={"k": "g"}),
            exponential_point(0, 1, positive=(0, [1]), zero_threshold=nan, attributes={"k": "h"}),
            exponential_point(0, 1, positive=(-2, [1, 0, 0, 1]), sum=3.5, attributes={"k": "i"}),
            exponential_point(
                0,
                1,
                positive=(-3, [1, 0, 0, 1]),
                zero_count=1,
                zero_threshold=0.5,
                sum=2.0,
                attributes={"k": "j"},
            ),
        ),
        histogram(
            "hostile.hist",
            histogram_point([2.0, 1.0], [1, 1, 1], 1.0, 1, attributes={"k": "a"}),
            histogram_point([1.0, nan], [1, 1, 1], 1.0, 1, attributes={"k": "b"}),
            histogram_point([1.0, inf], [1, 1, 1], 1.0, 1, attributes={"k": "c"}),
            histogram_point([1.0], [1, 1], 1.0, 1, count=5, attributes={"k": "d"}),
            histogram_point([1.0], [1, 1], -3.0, 1, attributes={"k": "e"}),
            histogram_point([1.0], [1, 1], None, 1, attributes={"k": "f"}),
            histogram_point([-1.0, 0.0], [1, 1, 1], 0.5, 1, attributes={"k": "g"}),
            histogram_point([1.0], [1, 1], 1.0, 1, attributes={"le": "x"}, exemplars=bad_ids),
            histogram_point([], [2], 1.0, 1, attributes={"k": "i"}, exemplars=good),
        ),
        histogram("hostile.delta", histogram_point([], [3], 1.0, 1, exemplars=good), delta=True),
        summary(
            "hostile.quantiles",
            summary_point([(0.5, -1.0)], 1, 1.0, 1, attributes={"k": "a"}),
            summary_point([(1.5, 1.0)], 1, 1.0, 1, attributes={"k": "b"}),
            summary_point([(0.5, 1.0), (0.5, 2.0)], 1, 1.0, 1, attributes={"k": "c"}),
            summary_point([(0.5, 1.0)], 1, -4.0, 1, attributes={"quantile": "y"}),
            summary_point([(0.5, nan)], 0, 0.0, 1, attributes={"k": "e"}),
        ),
        sum_metric("total", number_point(1, 1)),
        sum_metric(
            "hostile.neg", number_point(-1.0, 1), number_point(nan, 1, attributes={"k": "b"})
        ),
        sum_metric("hostile.inf", number_point(inf, 1, exemplars=bad_ids)),
        gauge("hostile.level", number_point(nan, 1, attributes={"__name__": "x", "le": "y"})),
        gauge("p.clash", number_point(1.0, 1)),
        sum_metric("p.clash", number_point(2, 1)),
        histogram("hg", histogram_point([1.0], [1, 0], 0.5, 1)),
        gauge("hg_count", number_point(3.0, 1)),
        gauge("process_cpu_seconds", number_point(4.0, 1)),
        resource={"service.name": "hostile", "service.instance.id": "h-1", "host.name": "x"},
        scope=("hostile.scope", "1.0"),
    )
