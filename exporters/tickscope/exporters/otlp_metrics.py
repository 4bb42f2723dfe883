"""OTLP metrics on /metrics, by the OpenTelemetry specification's Prometheus
compatibility rules (compatibility/prometheus_and_openmetrics.md, "OTLP Metric
points to Prometheus"), names as in exporters.otlp_names.

Types:
- Gauge -> gauge.
- Sum, monotonic -> counter (name ends in _total). Cumulative points replace the
  stream's value; delta points are added to it (converted to cumulative).
  A cumulative stream that restarts (its start time changes, or its value goes
  down: the engine restarted) keeps counting from where it was, so Prometheus's
  rate() sees neither a negative step nor a missed reset (when the new value has
  already passed the old one by the time it is seen).
- Sum, non-monotonic, cumulative -> gauge; delta -> dropped, as the spec says
  (a sum of changes with no known base is no gauge), counted.
- Histogram (explicit buckets) -> histogram (_bucket, _count, _sum); delta points
  are added up, restarts of cumulative streams handled as for counters.
- Exponential histogram -> histogram with explicit buckets. Prometheus's native
  histograms need its protobuf exposition, which this text endpoint does not
  serve, so (as the spec allows) each populated bucket becomes an `le` bucket:
  positive bucket i of scale s covers (b^i, b^(i+1)] with b = 2^(2^-s), and its
  `le` is b^(i+1); negative bucket i covers [-b^(i+1), -b^i), `le` -b^i; the zero
  bucket's `le` is the zero threshold. Delta points are merged exactly (both
  downscaled to the smaller scale, as the SDK merges them); past
  `max_exponential_buckets` buckets a histogram is downscaled until it fits.
- Summary -> summary (quantile series, _count, _sum).

Labels: the point's attributes (exporters.otlp_names.label_name; keys that
collide are merged, values joined with ";" in the order of the original keys),
otel_scope_name / otel_scope_version, and job / instance from the resource
(service.namespace/service.name, service.instance.id), which override
attributes of the same name. The rest of the resource goes to target_info.

Exemplars of histograms and monotonic sums are kept (trace_id, span_id) and
served with OpenMetrics: per bucket, the newest. A point flagged
NO_RECORDED_VALUE removes its stream; a stream not updated for `stale_after`
disappears. Each metric holds at most `max_series_per_metric` label sets; past
that, points fold into one series labelled otel_metric_overflow="true" where
that can be done correctly (gauges, sums, histograms with the same buckets) and
are rejected otherwise, counted either way.
"""

from __future__ import annotations

import bisect
import collections
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import Field

from tickscope.core.configtypes import Duration, StrictModel
from tickscope.core.spanview import anyvalue_to_str
from tickscope.exporters.otlp_names import label_name, metric_name
from tickscope.exposition.text import (
    Exemplar,
    escape_label_value,
    format_exemplar,
    format_value,
    help_lines,
)

__all__ = ["IngestResult", "MetricStore", "MetricsConfig"]

DELTA = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
NO_RECORDED_VALUE = metrics_pb2.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
OVERFLOW_KEY: tuple[Any, ...] = (object(),)
OVERFLOW_LABELS = 'otel_metric_overflow="true"'
IDENTIFYING = frozenset({"service.name", "service.namespace", "service.instance.id"})

# Names the sidecar exports itself: an OTLP metric that would land on one is refused.
RESERVED_PREFIXES = (
    "node_", "engine_process_", "engine_container_", "tickscope_", "traces_span_metrics_",
    "trading_", "exchange_rate_limit_", "exchange_api_errors", "python_gc_", "python_info",
    "target_info",
)  # fmt: skip
RESERVED_NAMES = frozenset(
    {
        "process_cpu_seconds_total", "process_virtual_memory_bytes", "process_resident_memory_bytes",
        "process_start_time_seconds", "process_open_fds", "process_max_fds",
    }
)  # fmt: skip


class MetricsConfig(StrictModel):
    enabled: bool = Field(True, description="Serve OTLP metrics (/v1/metrics, MetricsService).")
    stale_after: Duration = Field(
        300.0, description="A stream not updated for this long disappears from /metrics."
    )
    max_series_per_metric: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="Label sets per metric; past it points fold into an "
        'otel_metric_overflow="true" series.',
    )
    max_exponential_buckets: int = Field(
        160, ge=2, le=1000, description="Most le buckets one exponential histogram becomes."
    )


@dataclass
class IngestResult:
    accepted: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    messages: list[str] = field(default_factory=list)

    def reject(self, reason: str, count: int, message: str) -> None:
        if count <= 0:
            return
        self.rejected[reason] += count
        if len(self.messages) < 5 and message not in self.messages:
            self.messages.append(message)


# -- streams -------------------------------------------------------------------


class _Stream:
    __slots__ = ("labels", "last_seen", "start", "time")

    def __init__(self, labels: str, now: float) -> None:
        self.labels = labels
        self.last_seen = now
        self.start = 0
        self.time = 0


class _Value(_Stream):
    __slots__ = ("exemplar", "offset", "value")

    def __init__(self, labels: str, now: float) -> None:
        super().__init__(labels, now)
        self.value = 0.0
        self.offset = 0.0
        self.exemplar: Exemplar | None = None


class _Histogram(_Stream):
    """Explicit buckets: `counts` per bucket (not cumulative), the last one +Inf."""

    __slots__ = ("bounds", "count", "counts", "exemplars", "has_sum", "offsets", "sum")

    def __init__(self, labels: str, now: float) -> None:
        super().__init__(labels, now)
        self.bounds: tuple[float, ...] = ()
        self.counts: list[float] = []
        self.sum = 0.0
        self.count = 0.0
        self.has_sum = False
        # What earlier incarnations of a restarted cumulative stream had counted.
        self.offsets: tuple[list[float], float, float] | None = None
        self.exemplars: list[Exemplar | None] = []


class _Exponential(_Stream):
    __slots__ = (
        "count",
        "exemplars",
        "negative",
        "positive",
        "scale",
        "sum",
        "zero_count",
        "zero_threshold",
    )

    def __init__(self, labels: str, now: float) -> None:
        super().__init__(labels, now)
        self.scale = 20
        self.zero_count = 0.0
        self.zero_threshold = 0.0
        self.positive: dict[int, float] = {}
        self.negative: dict[int, float] = {}
        self.sum = 0.0
        self.count = 0.0
        self.exemplars: list[Exemplar] = []


class _Summary(_Stream):
    __slots__ = ("count", "quantiles", "sum")

    def __init__(self, labels: str, now: float) -> None:
        super().__init__(labels, now)
        self.count = 0.0
        self.sum = 0.0
        self.quantiles: list[tuple[float, float]] = []


class _Family:
    def __init__(self, name: str, kind: str, help_text: str, factory: Any) -> None:
        self.name = name
        self.kind = kind  # gauge | counter | histogram | summary
        self.help = help_text
        self.factory = factory
        self.streams: dict[tuple[Any, ...], Any] = {}
        # For points folded into the overflow series: each overflowed stream's last
        # cumulative value, so that only its increase is added. Bounded.
        self.overflow_last: dict[tuple[Any, ...], Any] = {}


def _exemplar(ex: metrics_pb2.Exemplar) -> Exemplar | None:
    if not ex.trace_id or not ex.span_id:
        return None
    value = ex.as_double if ex.WhichOneof("value") == "as_double" else float(ex.as_int)
    return (ex.trace_id.hex(), ex.span_id.hex(), value, ex.time_unix_nano / 1e9)


def _number(point: metrics_pb2.NumberDataPoint) -> float:
    return point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)


# -- exponential histograms ----------------------------------------------------------


def _downscale(buckets: dict[int, float], by: int) -> dict[int, float]:
    if by <= 0:
        return buckets
    merged: dict[int, float] = collections.defaultdict(float)
    for index, count in buckets.items():
        merged[index >> by] += count
    return dict(merged)


def _expo_buckets(point: Any, which: str) -> dict[int, float]:
    b = getattr(point, which)
    return {b.offset + i: float(c) for i, c in enumerate(b.bucket_counts) if c}


def _expo_bounds(s: _Exponential, max_buckets: int) -> tuple[list[float], list[float]]:
    """(le bounds, counts per bucket), ascending, for an exponential histogram."""
    scale, positive, negative = s.scale, s.positive, s.negative
    while len(positive) + len(negative) + 1 > max_buckets and scale > -10:
        positive, negative, scale = _downscale(positive, 1), _downscale(negative, 1), scale - 1
    base = 2.0 ** (2.0**-scale)
    bounds: list[float] = []
    counts: list[float] = []
    for index in sorted(negative, reverse=True):  # most negative first
        bounds.append(-(base**index))
        counts.append(negative[index])
    bounds.append(s.zero_threshold)
    counts.append(s.zero_count)
    for index in sorted(positive):
        upper = base ** (index + 1)
        if math.isinf(upper):
            break
        bounds.append(upper)
        counts.append(positive[index])
    return bounds, counts


# -- the store -----------------------------------------------------------------------


class MetricStore:
    def __init__(
        self,
        config: MetricsConfig,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        # Monotonic seconds; tests pass a fake clock to step through staleness.
        self._clock = clock
        self._families: dict[str, _Family] = {}
        self._targets: dict[tuple[str, str], tuple[str, float]] = {}
        self._label_names: dict[str, str] = {}
        self._last_expiry = clock()
        self._expiry_every = min(30.0, config.stale_after / 10)
        Gauge(
            "tickscope_metrics_series",
            "Series translated from OTLP metrics, over all metrics.",
            registry=registry,
        ).set_function(lambda: sum(len(f.streams) for f in self._families.values()))
        self.overflow = Counter(
            "tickscope_metrics_overflow_points_total",
            "Data points folded into a metric's overflow series (cardinality limit reached).",
            ["metric"],
            registry=registry,
        )
        self.expired = Counter(
            "tickscope_metrics_expired_series_total",
            "Series dropped after metrics.stale_after without an update.",
            registry=registry,
        )

    # -- ingest --------------------------------------------------------------------

    def ingest(self, request: ExportMetricsServiceRequest) -> IngestResult:
        result = IngestResult()
        now = self._clock()
        for rm in request.resource_metrics:
            resource = {kv.key: anyvalue_to_str(kv.value) for kv in rm.resource.attributes}
            identity = self._identity(resource, now)
            for sm in rm.scope_metrics:
                scope: dict[str, str] = {}
                if sm.scope.name:
                    scope["otel_scope_name"] = sm.scope.name
                    scope["otel_scope_version"] = sm.scope.version
                for metric in sm.metrics:
                    self._metric(metric, identity, scope, now, result)
        if now - self._last_expiry >= self._expiry_every:
            self.expire(now)
        return result

    def _identity(self, resource: dict[str, str], now: float) -> dict[str, str]:
        labels: dict[str, str] = {}
        service = resource.get("service.name")
        if service:
            namespace = resource.get("service.namespace")
            labels["job"] = f"{namespace}/{service}" if namespace else service
        instance = resource.get("service.instance.id")
        if instance:
            labels["instance"] = instance
        rest = {k: v for k, v in resource.items() if k not in IDENTIFYING}
        if rest and labels:
            pairs: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
            for key, value in rest.items():
                name = self._label(key)
                if name:
                    pairs[name].append((key, value))
            merged = {n: ";".join(v for _, v in sorted(kv)) for n, kv in pairs.items()}
            merged.update(labels)
            target = (labels.get("job", ""), labels.get("instance", ""))
            self._targets[target] = (_label_text(merged), now)
        return labels

    def _label(self, key: str) -> str:
        name = self._label_names.get(key)
        if name is None:
            name = label_name(key)
            if len(self._label_names) > 10_000:
                self._label_names.clear()
            self._label_names[key] = name
        return name

    def _labels(
        self, attributes: Iterable[Any], identity: dict[str, str], scope: dict[str, str]
    ) -> dict[str, str]:
        pairs: dict[str, list[tuple[str, str]]] = {}
        for kv in attributes:
            name = self._label(kv.key)
            if name:
                pairs.setdefault(name, []).append((kv.key, anyvalue_to_str(kv.value)))
        labels = {
            name: kv[0][1] if len(kv) == 1 else ";".join(v for _, v in sorted(kv))
            for name, kv in pairs.items()
        }
        labels.update(scope)
        labels.update(identity)  # job and instance win over attributes of the same name
        return labels

    def _metric(
        self,
        metric: metrics_pb2.Metric,
        identity: dict[str, str],
        scope: dict[str, str],
        now: float,
        result: IngestResult,
    ) -> None:
        data = metric.WhichOneof("data")
        if data is None:
            return
        factory: type[_Stream]
        points: Sequence[Any] = getattr(metric, data).data_points
        if data == "gauge":
            kind, factory = "gauge", _Value
        elif data == "sum":
            if metric.sum.is_monotonic:
                kind, factory = "counter", _Value
            elif metric.sum.aggregation_temporality == DELTA:
                result.reject(
                    "delta_non_monotonic_sum",
                    len(points),
                    f"{metric.name}: delta non-monotonic sums are dropped (the specification's rule)",
                )
                return
            else:
                kind, factory = "gauge", _Value
        elif data == "histogram":
            kind, factory = "histogram", _Histogram
        elif data == "exponential_histogram":
            kind, factory = "histogram", _Exponential
        else:
            kind, factory = "summary", _Summary
        name = metric_name(metric.name, metric.unit, kind)
        if not name:
            result.reject("invalid_name", len(points), f"{metric.name!r}: no valid Prometheus name")
            return
        if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
            result.reject("name_conflict", len(points), f"{metric.name}: {name} is tickscope's own")
            return
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(name, kind, metric.description, factory)
        elif family.kind != kind or family.factory is not factory:
            result.reject(
                "type_conflict",
                len(points),
                f"{metric.name}: {name} is already a {family.kind}, not a {kind}",
            )
            return
        if metric.description and not family.help:
            family.help = metric.description
        delta = data in ("sum", "histogram", "exponential_histogram") and (
            getattr(metric, data).aggregation_temporality == DELTA
        )
        for point in points:
            labels = self._labels(point.attributes, identity, scope)
            key = tuple(sorted(labels.items()))
            stream = family.streams.get(key)
            if point.flags & NO_RECORDED_VALUE:
                family.streams.pop(key, None)  # the stream ended: no stale value is served
                result.accepted += 1
                continue
            overflow = False
            if stream is None:
                if len(family.streams) >= self.config.max_series_per_metric:
                    overflow = True
                    stream = family.streams.get(OVERFLOW_KEY)
                    if stream is None:
                        stream = family.streams[OVERFLOW_KEY] = factory(OVERFLOW_LABELS, now)
                else:
                    stream = family.streams[key] = factory(_label_text(labels), now)
            if overflow:
                if self._fold(family, key, stream, point, delta, data):
                    self.overflow.labels(name).inc()
                    result.accepted += 1
                else:
                    result.reject(
                        "cardinality_limit",
                        1,
                        f"{name}: over {self.config.max_series_per_metric} series",
                    )
                continue
            if point.time_unix_nano and point.time_unix_nano < stream.time:
                result.reject("out_of_order", 1, f"{name}: a point older than the last one")
                continue
            stream.last_seen = now
            self._update(stream, point, delta, data)
            result.accepted += 1

    def _update(self, stream: Any, point: Any, delta: bool, data: str) -> None:
        restarted = bool(
            point.start_time_unix_nano
            and stream.start
            and point.start_time_unix_nano != stream.start
        )
        if data in ("gauge", "sum"):
            value = _number(point)
            if data == "sum" and isinstance(stream, _Value):
                if delta:
                    stream.value += value
                else:
                    if restarted or value < stream.value:
                        stream.offset += stream.value  # the engine restarted: keep counting
                    stream.value = value
                for ex in point.exemplars:
                    stream.exemplar = _exemplar(ex) or stream.exemplar
            else:
                stream.value = value
        elif data == "histogram":
            self._update_histogram(stream, point, delta, restarted)
        elif data == "exponential_histogram":
            self._update_exponential(stream, point, delta)
        else:
            stream.count = float(point.count)
            stream.sum = point.sum
            stream.quantiles = sorted((q.quantile, q.value) for q in point.quantile_values)
        stream.start = point.start_time_unix_nano or stream.start
        stream.time = point.time_unix_nano or stream.time

    @staticmethod
    def _update_histogram(stream: _Histogram, point: Any, delta: bool, restarted: bool) -> None:
        bounds = tuple(point.explicit_bounds)
        counts = [float(c) for c in point.bucket_counts]
        if len(counts) != len(bounds) + 1:
            counts = (counts + [0.0] * (len(bounds) + 1))[: len(bounds) + 1]
        if bounds != stream.bounds:
            # New buckets: a new histogram as far as Prometheus is concerned.
            stream.bounds, stream.counts, stream.sum, stream.count = (
                bounds,
                counts,
                point.sum,
                float(point.count),
            )
            stream.offsets = None
            stream.exemplars = [None] * len(counts)
        elif delta:
            stream.counts = [a + b for a, b in zip(stream.counts, counts, strict=True)]
            stream.sum += point.sum
            stream.count += point.count
        else:
            if restarted or point.count < stream.count:
                old = stream.offsets or ([0.0] * len(counts), 0.0, 0.0)
                stream.offsets = (
                    [a + b for a, b in zip(old[0], stream.counts, strict=True)],
                    old[1] + stream.sum,
                    old[2] + stream.count,
                )
            stream.counts, stream.sum, stream.count = counts, point.sum, float(point.count)
        stream.has_sum = stream.has_sum or point.HasField("sum")
        for ex in point.exemplars:
            exemplar = _exemplar(ex)
            if exemplar is not None:
                stream.exemplars[bisect.bisect_left(bounds, exemplar[2])] = exemplar

    @staticmethod
    def _update_exponential(stream: _Exponential, point: Any, delta: bool) -> None:
        positive = _expo_buckets(point, "positive")
        negative = _expo_buckets(point, "negative")
        if not delta or not (stream.count or stream.zero_count):
            stream.scale, stream.positive, stream.negative = point.scale, positive, negative
            stream.zero_count, stream.sum, stream.count = (
                float(point.zero_count),
                point.sum,
                float(point.count),
            )
        else:
            # Merge exactly at the smaller of the two scales.
            scale = min(stream.scale, point.scale)
            mine_p = _downscale(stream.positive, stream.scale - scale)
            mine_n = _downscale(stream.negative, stream.scale - scale)
            for target, extra in ((mine_p, _downscale(positive, point.scale - scale)),
                                  (mine_n, _downscale(negative, point.scale - scale))):  # fmt: skip
                for index, count in extra.items():
                    target[index] = target.get(index, 0.0) + count
            stream.scale, stream.positive, stream.negative = scale, mine_p, mine_n
            stream.zero_count += point.zero_count
            stream.sum += point.sum
            stream.count += point.count
        stream.zero_threshold = max(stream.zero_threshold, point.zero_threshold)
        for ex in point.exemplars:
            exemplar = _exemplar(ex)
            if exemplar is not None:
                stream.exemplars = [*stream.exemplars[-7:], exemplar]

    def _fold(
        self,
        family: _Family,
        key: tuple[Any, ...],
        overflow: Any,
        point: Any,
        delta: bool,
        data: str,
    ) -> bool:
        """Add an overflowed point to the overflow series; False if that cannot be done right."""
        if data == "gauge" or (data == "sum" and family.kind == "gauge"):
            overflow.value = _number(point)
            return True
        if data == "sum":
            value = _number(point)
            if not delta:
                last = family.overflow_last.get(key, 0.0)
                self._remember(family, key, value)
                value = value - last if value >= last else value
            overflow.value += value
            return True
        if data == "histogram":
            bounds = tuple(point.explicit_bounds)
            if overflow.bounds and bounds != overflow.bounds:
                return False
            counts = [float(c) for c in point.bucket_counts][: len(bounds) + 1]
            counts += [0.0] * (len(bounds) + 1 - len(counts))
            total, summed = float(point.count), point.sum
            if not delta:
                last = family.overflow_last.get(key)
                self._remember(family, key, (counts, total, summed))
                if last is not None and total >= last[1]:
                    counts = [a - b for a, b in zip(counts, last[0], strict=True)]
                    total, summed = total - last[1], summed - last[2]
            if not overflow.bounds:
                overflow.bounds, overflow.counts = bounds, [0.0] * len(counts)
                overflow.exemplars = [None] * len(counts)
            overflow.counts = [a + b for a, b in zip(overflow.counts, counts, strict=True)]
            overflow.count += total
            overflow.sum += summed
            overflow.has_sum = True
            return True
        return False

    def _remember(self, family: _Family, key: tuple[Any, ...], value: Any) -> None:
        if len(family.overflow_last) >= 10 * self.config.max_series_per_metric:
            family.overflow_last.clear()  # bounded: an evicted stream's next value counts whole
        family.overflow_last[key] = value

    # -- expiry ----------------------------------------------------------------------

    def expire(self, now: float) -> int:
        self._last_expiry = now
        horizon = now - self.config.stale_after
        dropped = 0
        for name in list(self._families):
            family = self._families[name]
            old = [k for k, s in family.streams.items() if s.last_seen < horizon]
            for key in old:
                del family.streams[key]
            dropped += len(old)
            if not family.streams:
                del self._families[name]
        for key in [k for k, (_, seen) in self._targets.items() if seen < horizon]:
            del self._targets[key]
        if dropped:
            self.expired.inc(dropped)
        return dropped

    def series_count(self) -> int:
        return sum(len(f.streams) for f in self._families.values())

    # -- exposition --------------------------------------------------------------------

    def family_names(self) -> list[str]:
        names = ["target_info"]
        for family in self._families.values():
            names.extend(_sample_names(family))
        return names

    def render(self, out: list[str], openmetrics: bool, names: frozenset[str] | None) -> None:
        now = self._clock()
        if now - self._last_expiry >= self._expiry_every:
            self.expire(now)
        if self._targets and (names is None or "target_info" in names):
            help_lines(out, "target_info", "gauge", "Target metadata", openmetrics)
            for labels, _ in self._targets.values():
                out.append(f"target_info{{{labels}}} 1.0\n")
        for family in self._families.values():
            if names is not None and names.isdisjoint(_sample_names(family)):
                continue
            self._render(out, family, openmetrics)

    def _render(self, out: list[str], family: _Family, openmetrics: bool) -> None:
        name = family.name
        help_lines(out, name, family.kind, _help(family.help or name), openmetrics)
        for stream in family.streams.values():
            labels = stream.labels
            if family.kind == "gauge":
                out.append(f"{name}{_braces(labels)} {format_value(stream.value)}\n")
            elif family.kind == "counter":
                line = f"{name}{_braces(labels)} {format_value(stream.offset + stream.value)}"
                if openmetrics and stream.exemplar is not None:
                    line += format_exemplar(stream.exemplar)
                out.append(line + "\n")
            elif family.kind == "summary":
                for quantile, value in stream.quantiles:
                    q = _join(labels, f'quantile="{format_value(quantile)}"')
                    out.append(f"{name}{{{q}}} {format_value(value)}\n")
                out.append(f"{name}_count{_braces(labels)} {format_value(stream.count)}\n")
                out.append(f"{name}_sum{_braces(labels)} {format_value(stream.sum)}\n")
            else:
                self._render_histogram(out, name, stream, openmetrics)

    def _render_histogram(self, out: list[str], name: str, stream: Any, openmetrics: bool) -> None:
        labels = stream.labels
        exemplars: list[Exemplar | None]
        if isinstance(stream, _Exponential):
            bounds, counts = _expo_bounds(stream, self.config.max_exponential_buckets)
            counts = [*counts, 0.0]
            total, summed, has_sum = stream.count, stream.sum, True
            exemplars = [None] * len(counts)
            for ex in stream.exemplars:
                exemplars[bisect.bisect_left(bounds, ex[2])] = ex
        else:
            bounds, counts = list(stream.bounds), list(stream.counts)
            total, summed, has_sum = stream.count, stream.sum, stream.has_sum
            if stream.offsets is not None:
                counts = [a + b for a, b in zip(counts, stream.offsets[0], strict=True)]
                summed += stream.offsets[1]
                total += stream.offsets[2]
            exemplars = stream.exemplars
        cumulative = 0.0
        for i, count in enumerate(counts):
            cumulative += count
            le = format_value(bounds[i]) if i < len(bounds) else "+Inf"
            bucket_labels = _join(labels, 'le="' + le + '"')
            line = f"{name}_bucket{{{bucket_labels}}} {format_value(cumulative)}"
            exemplar = exemplars[i] if openmetrics and i < len(exemplars) else None
            if exemplar is not None:
                line += format_exemplar(exemplar)
            out.append(line + "\n")
        out.append(f"{name}_count{_braces(labels)} {format_value(total)}\n")
        if has_sum:
            out.append(f"{name}_sum{_braces(labels)} {format_value(summed)}\n")


def _sample_names(family: _Family) -> tuple[str, ...]:
    if family.kind == "counter":
        return (family.name, family.name.removesuffix("_total"))
    if family.kind in ("histogram", "summary"):
        n = family.name
        return (n, f"{n}_bucket", f"{n}_count", f"{n}_sum")
    return (family.name,)


def _label_text(labels: dict[str, str]) -> str:
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(labels.items()))


def _braces(labels: str) -> str:
    return f"{{{labels}}}" if labels else ""


def _join(labels: str, extra: str) -> str:
    return f"{labels},{extra}" if labels else extra


def _help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
