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
from tickscope.exporters.otlpmetrics import accumulator, expohisto, validate
from tickscope.exporters.otlpmetrics.accumulator import (
    Exponential,
    Histogram,
    OverflowMemory,
    Stream,
    Summary,
    Value,
)
from tickscope.exporters.otlpmetrics.config import MetricsConfig
from tickscope.exporters.otlpmetrics.names import metric_name, openmetrics_unit
from tickscope.exporters.otlpmetrics.render import render_family, render_targets
from tickscope.exporters.otlpmetrics.resource import Labeler
from tickscope.exposition.text import Lines, sample_names, sorted_label_text

__all__ = ["IngestResult", "MetricStore"]

DELTA = metrics_pb2.AggregationTemporality.AGGREGATION_TEMPORALITY_DELTA
NO_RECORDED_VALUE = metrics_pb2.DataPointFlags.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK
# A key no label tuple can equal (it holds a non-string).
OVERFLOW_KEY: tuple[Any, ...] = (object(),)
OVERFLOW_LABELS = 'otel_metric_overflow="true"'

# Names the sidecar exports itself: an OTLP metric that would land on one is refused.
RESERVED_PREFIXES = (
    "node_", "engine_process_", "engine_container_", "tickscope_", "traces_span_metrics_",
    "trading_", "exchange_rate_limit_", "exchange_api_errors", "exchange_timestamp_rejections",
    "python_gc_", "python_info", "target_info",
)  # fmt: skip
# The account figures the shim records (tickscope.shim.account, on only when the
# operator turns them on) are named like the trading metrics the sidecar derives from
# spans: these names, with these types, are taken from a scope named tickscope.shim*
# (the shim's instrumentation scopes) and refused from any other, as every other
# reserved name is. None of them is a name the sidecar's own families use.
SHIM_SCOPE_PREFIX = "tickscope.shim"
SHIM_NAMES: dict[str, str] = {
    "trading_balance": "gauge",
    "trading_position_size": "gauge",
    "trading_position_notional": "gauge",
    "trading_position_entry_price": "gauge",
    "trading_position_unrealized_pnl": "gauge",
    "trading_open_orders": "gauge",
    "trading_open_order_oldest_age_seconds": "gauge",
    "trading_order_filled_ratio": "histogram",
    "trading_order_slippage_ratio": "histogram",
}
# prometheus_client's process collector, by every name its families claim: a counter
# is `process_cpu_seconds` in OpenMetrics, so an OTLP gauge of that name would clash;
# and `target`, target_info's OpenMetrics family (an info).
RESERVED_NAMES = frozenset(
    {
        "process_cpu_seconds_total", "process_cpu_seconds", "process_cpu_seconds_created",
        "process_virtual_memory_bytes", "target", "process_resident_memory_bytes",
        "process_start_time_seconds", "process_open_fds", "process_max_fds",
    }
)  # fmt: skip
# Label names the exposition writes itself: an attribute that would become one is
# renamed with a "key_" prefix (see Labeler.labels for `__` names), on every type:
# beside its own le a histogram would have two, and promtool's lint flags le on a
# non-histogram and quantile on a non-summary as well.
OWN_LABELS = frozenset({"le", "quantile"})


def claimed_names(name: str, kind: str) -> frozenset[str]:
    """Every name a family of this kind takes in either format: its samples, its
    OpenMetrics family name (a counter's without _total) and the _created sample the
    OpenMetrics parser reserves. Two families may share none of them."""
    if kind == "counter":
        base = name.removesuffix("_total")
        return frozenset({name, base, f"{base}_created"})
    if kind in ("histogram", "summary"):
        return frozenset({name, *(f"{name}{s}" for s in ("_bucket", "_count", "_sum", "_created"))})
    return frozenset({name})


class _Family:
    def __init__(
        self,
        name: str,
        kind: str,
        help_text: str,
        factory: type[Stream],
        memory: int,
        unit: str = "",
    ) -> None:
        self.name = name
        self.unit = unit  # the OpenMetrics UNIT, "" for none
        self.kind = kind  # gauge | counter | histogram | summary
        self.help = help_text
        self.factory = factory
        self.streams: dict[tuple[Any, ...], Any] = {}
        self.overflow_memory = OverflowMemory(memory)
        self.sample_names = sample_names(name, kind)
        self.claims = claimed_names(name, kind)


def _misleading_suffix(name: str, kind: str) -> str | None:
    """The suffix of `name` that only another type's series may carry, if any."""
    if kind != "counter" and name.endswith("_total"):
        return "_total"
    # `_count` is served: OpenTelemetry's semantic conventions name gauges so
    # (process.thread.count, system.cpu.logical.count), and Prometheus's own OTLP
    # translation keeps them; a clash with a histogram's _count is a type_conflict.
    if kind not in ("histogram", "summary") and name.endswith("_sum"):
        return "_sum"
    if kind != "histogram" and name.endswith("_bucket"):
        return "_bucket"
    return None


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
        # Each name a family claims (claimed_names) -> that family's name.
        self._claims: dict[str, str] = {}
        self._labeler = Labeler()
        self._bounds = expohisto.BoundCache(config.exponential_bound_cache)
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
        self.repaired = Counter(
            "tickscope_metrics_repaired_points_total",
            "Data points accepted after a repair, by reason: reserved_label (an attribute "
            "named le, quantile or __* renamed key_*), invalid_exemplar (an exemplar with "
            "a trace_id not 16 bytes or span_id not 8 dropped).",
            ["reason"],
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
                scope = self._labeler.scope(sm.scope, sm.schema_url)
                shim = sm.scope.name.startswith(SHIM_SCOPE_PREFIX)
                for metric in sm.metrics:
                    self._metric(metric, identity, scope, now, result, shim)
        if now - self._last_expiry >= self._expiry_every:
            self.expire(now)
        return result

    def _family(
        self,
        metric: metrics_pb2.Metric,
        data: str,
        points: int,
        result: IngestResult,
        shim: bool = False,
    ) -> _Family | None:
        """The family a metric's points go to, made on first sight; None (and the
        points rejected with a reason) when they cannot go anywhere. `shim`: the
        metric comes from a tickscope.shim* scope, which may use SHIM_NAMES."""
        kind_factory = _kind(metric, data)
        if kind_factory is None:
            result.reject(
                "delta_non_monotonic_sum",
                points,
                f"{metric.name}: delta non-monotonic sums are dropped (the specification's rule)",
            )
            return None
        kind, factory = kind_factory
        # A non-monotonic sum (an UpDownCounter) is named as neither a counter nor a
        # gauge: otlptranslator gives it no _ratio for unit 1 (nor _total).
        naming = "updowncounter" if data == "sum" and kind == "gauge" else kind
        name = metric_name(metric.name, metric.unit, naming)
        if not name or (kind == "counter" and name == "total"):
            # A counter named "total" alone would be an OpenMetrics family with no name.
            result.reject("invalid_name", points, f"{metric.name!r}: no valid Prometheus name")
            return None
        claims = claimed_names(name, kind)
        if not (shim and SHIM_NAMES.get(name) == kind) and (
            not claims.isdisjoint(RESERVED_NAMES)
            or any(c.startswith(RESERVED_PREFIXES) for c in claims)
        ):
            result.reject("name_conflict", points, f"{metric.name}: {name} is tickscope's own")
            return None
        family = self._families.get(name)
        if family is None:
            clash = next((self._claims[c] for c in claims if c in self._claims), None)
            if clash is not None:
                # The first family keeps its names (as for tickscope's own prefixes): a
                # gauge `x` beside a counter `x_total`, or `h_count` beside a histogram `h`.
                other = self._families[clash]
                result.reject(
                    "type_conflict",
                    points,
                    f"{metric.name}: {name} ({kind}) clashes with the {other.kind} {clash}",
                )
                return None
            suffix = _misleading_suffix(name, kind)
            if suffix is not None:
                # promtool's lint (and every reader of the exposition) takes these suffixes for
                # a counter's or a histogram's series: a gauge "queue.total" would be read as
                # a counter. Refused, like the other names that would mislead Prometheus.
                result.reject(
                    "invalid_name",
                    points,
                    f"{metric.name}: a {kind} named {name} ends in {suffix}, which only "
                    + {"_total": "counters", "_bucket": "histograms"}.get(
                        suffix, "histograms and summaries"
                    )
                    + " may",
                )
                return None
            family = self._families[name] = _Family(
                name,
                kind,
                metric.description,
                factory,
                10 * self.config.max_series_per_metric,
                openmetrics_unit(name, metric.unit, kind),
            )
            for c in family.claims:
                self._claims[c] = name
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
        shim: bool = False,
    ) -> None:
        data = metric.WhichOneof("data")
        if data is None:
            return
        points: Sequence[Any] = getattr(metric, data).data_points
        family = self._family(metric, data, len(points), result, shim)
        if family is None:
            return
        try:
            self._points(metric, data, points, family, identity, scope, now, result)
        finally:
            if not family.streams and self._families.get(family.name) is family:
                # Every point refused (or every stream ended): no family without series
                # is left behind, holding its names against a later, valid metric.
                del self._families[family.name]
                for c in family.claims:
                    self._claims.pop(c, None)

    def _points(
        self,
        metric: metrics_pb2.Metric,
        data: str,
        points: Sequence[Any],
        family: _Family,
        identity: dict[str, str],
        scope: dict[str, str],
        now: float,
        result: IngestResult,
    ) -> None:
        name = family.name
        delta = data in ("sum", "histogram", "exponential_histogram") and (
            getattr(metric, data).aggregation_temporality == DELTA
        )
        limit = self.config.max_series_per_metric
        for point in points:
            labels, renamed = self._labeler.labels(point.attributes, identity, scope, OWN_LABELS)
            key = tuple(sorted(labels.items()))
            stream = family.streams.get(key)
            if point.flags & NO_RECORDED_VALUE:
                family.streams.pop(key, None)  # the stream ended: no stale value is served
                result.accepted += 1
                continue
            invalid = validate.check(point, data, family.kind, self._bounds)
            if invalid is not None:
                result.reject(invalid[0], 1, f"{metric.name}: {invalid[1]}")
                continue
            if renamed:
                self.repaired.labels("reserved_label").inc()
            if data != "summary" and not all(map(validate.valid_exemplar, point.exemplars)):
                self.repaired.labels("invalid_exemplar").inc()  # dropped by exemplar_of
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
                for c in family.claims:
                    self._claims.pop(c, None)
        self._labeler.expire(horizon)
        if dropped:
            self.expired.inc(dropped)
        return dropped

    def series_count(self) -> int:
        return sum(len(f.streams) for f in self._families.values())

    def gauge_values(self, name: str) -> list[tuple[dict[str, str], float]]:
        """(labels, value) of each series of the gauge family `name` (the Prometheus
        name, e.g. engine_loop_heartbeat_timestamp_seconds), job/instance and
        otel_scope_* included; [] when there is none or the family is not a gauge.
        The overflow series is left out. Reads only: nothing expires here."""
        family = self._families.get(name)
        if family is None or family.kind != "gauge":
            return []
        return [
            (dict(key), stream.value)
            for key, stream in list(family.streams.items())
            if key is not OVERFLOW_KEY
        ]

    # -- exposition --------------------------------------------------------------------

    def family_names(self) -> list[str]:
        names = ["target_info"]
        for family in self._families.values():
            names.extend(family.sample_names)
        return names

    def render(self, out: Lines, openmetrics: bool, names: frozenset[str] | None) -> None:
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
                family.unit,
                self._bounds,
            )
