"""The metric store: OTLP metrics requests in, families of streams held, rendered
on every scrape. Translation happens as a request arrives (no queue): a data
point is a few microseconds of work and the request body limit bounds a request.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client import CollectorRegistry, Counter, Gauge

from tickscope.core.consumer import IngestResult
from tickscope.exporters.otlpmetrics import accumulator
from tickscope.exporters.otlpmetrics.accumulator import (
    Exponential,
    Histogram,
    OverflowMemory,
    Stream,
    Summary,
    Value,
)
from tickscope.exporters.otlpmetrics.config import MetricsConfig
from tickscope.exporters.otlpmetrics.names import metric_name
from tickscope.exporters.otlpmetrics.render import render_family, render_targets
from tickscope.exporters.otlpmetrics.resource import Labeler
from tickscope.exposition.text import sample_names, sorted_label_text

__all__ = ["IngestResult", "MetricStore"]

DELTA = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
NO_RECORDED_VALUE = metrics_pb2.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
# A key no label tuple can equal (it holds a non-string).
OVERFLOW_KEY: tuple[Any, ...] = (object(),)
OVERFLOW_LABELS = 'otel_metric_overflow="true"'

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


class _Family:
    def __init__(
        self, name: str, kind: str, help_text: str, factory: type[Stream], memory: int
    ) -> None:
        self.name = name
        self.kind = kind  # gauge | counter | histogram | summary
        self.help = help_text
        self.factory = factory
        self.streams: dict[tuple[Any, ...], Any] = {}
        self.overflow_memory = OverflowMemory(memory)
        self.sample_names = sample_names(name, kind)


def _kind(metric: metrics_pb2.Metric, data: str) -> tuple[str, type[Stream]] | None:
    """(Prometheus type, stream class) for an OTLP metric; None for a delta
    non-monotonic sum, which the specification drops."""
    if data == "gauge":
        return "gauge", Value
    if data == "sum":
        if metric.sum.is_monotonic:
            return "counter", Value
        if metric.sum.aggregation_temporality == DELTA:
            return None
        return "gauge", Value
    if data == "histogram":
        return "histogram", Histogram
    if data == "exponential_histogram":
        return "histogram", Exponential
    return "summary", Summary


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
        self._labeler = Labeler()
        self._last_expiry = clock()
        self._expiry_every = min(30.0, config.stale_after / 10)
        Gauge(
            "tickscope_metrics_series",
            "Series translated from OTLP metrics, over all metrics.",
            registry=registry,
        ).set_function(self.series_count)
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
            identity = self._labeler.identity(rm.resource.attributes, now)
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

    def _family(
        self, metric: metrics_pb2.Metric, data: str, points: int, result: IngestResult
    ) -> _Family | None:
        """The family a metric's points go to, made on first sight; None (and the
        points rejected with a reason) when they cannot go anywhere."""
        kind_factory = _kind(metric, data)
        if kind_factory is None:
            result.reject(
                "delta_non_monotonic_sum",
                points,
                f"{metric.name}: delta non-monotonic sums are dropped (the specification's rule)",
            )
            return None
        kind, factory = kind_factory
        name = metric_name(metric.name, metric.unit, kind)
        if not name:
            result.reject("invalid_name", points, f"{metric.name!r}: no valid Prometheus name")
            return None
        if name in RESERVED_NAMES or name.startswith(RESERVED_PREFIXES):
            result.reject("name_conflict", points, f"{metric.name}: {name} is tickscope's own")
            return None
        family = self._families.get(name)
        if family is None:
            family = self._families[name] = _Family(
                name, kind, metric.description, factory, 10 * self.config.max_series_per_metric
            )
        elif family.kind != kind or family.factory is not factory:
            result.reject(
                "type_conflict",
                points,
                f"{metric.name}: {name} is already a {family.kind}, not a {kind}",
            )
            return None
        if metric.description and not family.help:
            family.help = metric.description
        return family

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
        points: Sequence[Any] = getattr(metric, data).data_points
        family = self._family(metric, data, len(points), result)
        if family is None:
            return
        name = family.name
        delta = data in ("sum", "histogram", "exponential_histogram") and (
            getattr(metric, data).aggregation_temporality == DELTA
        )
        limit = self.config.max_series_per_metric
        for point in points:
            labels = self._labeler.labels(point.attributes, identity, scope)
            key = tuple(sorted(labels.items()))
            stream = family.streams.get(key)
            if point.flags & NO_RECORDED_VALUE:
                family.streams.pop(key, None)  # the stream ended: no stale value is served
                result.accepted += 1
                continue
            if stream is None and len(family.streams) >= limit:
                if self._fold(family, key, point, delta, data, now):
                    self.overflow.labels(name).inc()
                    result.accepted += 1
                else:
                    result.reject("cardinality_limit", 1, f"{name}: over {limit} series")
                continue
            if stream is None:
                stream = family.streams[key] = family.factory(sorted_label_text(labels), now)
            if point.time_unix_nano and point.time_unix_nano < stream.time:
                result.reject("out_of_order", 1, f"{name}: a point older than the last one")
                continue
            stream.last_seen = now
            accumulator.update(stream, point, delta, data)
            result.accepted += 1

    @staticmethod
    def _fold(
        family: _Family, key: tuple[Any, ...], point: Any, delta: bool, data: str, now: float
    ) -> bool:
        """Fold a point past the cardinality limit into the overflow series (made
        only for a point that folds: a refused one leaves no empty series behind)."""
        if not accumulator.foldable(data):
            return False
        overflow = family.streams.get(OVERFLOW_KEY)
        if overflow is None:
            overflow = family.streams[OVERFLOW_KEY] = family.factory(OVERFLOW_LABELS, now)
        if not accumulator.fold(
            family.kind, family.overflow_memory, key, overflow, point, delta, data
        ):
            return False
        overflow.last_seen = now  # written to: not stale, however old the series
        return True

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
        self._labeler.expire(horizon)
        if dropped:
            self.expired.inc(dropped)
        return dropped

    def series_count(self) -> int:
        return sum(len(f.streams) for f in self._families.values())

    # -- exposition --------------------------------------------------------------------

    def family_names(self) -> list[str]:
        names = ["target_info"]
        for family in self._families.values():
            names.extend(family.sample_names)
        return names

    def render(self, out: list[str], openmetrics: bool, names: frozenset[str] | None) -> None:
        now = self._clock()
        if now - self._last_expiry >= self._expiry_every:
            self.expire(now)
        targets = self._labeler.targets
        if targets and (names is None or "target_info" in names):
            render_targets(out, targets.values(), openmetrics)
        for family in self._families.values():
            if names is not None and names.isdisjoint(family.sample_names):
                continue
            render_family(
                out,
                family.name,
                family.kind,
                family.help,
                family.streams.values(),
                openmetrics,
                self.config.max_exponential_buckets,
            )
