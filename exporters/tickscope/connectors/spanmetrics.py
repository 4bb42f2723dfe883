"""RED metrics from spans, compatible with the OpenTelemetry Collector's spanmetrics connector.

Exported as the connector's Prometheus path writes them:
traces_span_metrics_calls_total and traces_span_metrics_duration_seconds with labels
service_name, span_name, span_kind (SPAN_KIND_CLIENT, ...), status_code
(STATUS_CODE_UNSET|OK|ERROR) and the configured dimensions.

Differences from the connector, on purpose:
- durations in seconds (Prometheus's base unit), where the connector defaults to
  milliseconds (traces_span_metrics_duration_milliseconds);
- a cardinality limit that is on by default (2,000 label sets; the connector's
  is unlimited): past it, new label sets fold into one series labelled only
  otel_metric_overflow="true";
- label sets not updated for `series_expiry` (15 minutes) are dropped, so memory
  follows the live label sets rather than every one ever seen;
- a dimension whose attribute is missing takes its default value ("" unless
  configured), so every series has the same label names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Annotated, Any

from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import Field, field_validator

from tickscope.core.configtypes import Buckets, Duration, StrictModel
from tickscope.exposition.families import HistogramFamily, Pending, fill_exemplars
from tickscope.exposition.text import Lines, format_exemplar, help_lines

__all__ = ["Dimension", "SpanMetrics", "SpanMetricsConfig"]

CALLS = "traces_span_metrics_calls_total"
DURATION = "traces_span_metrics_duration_seconds"
BASE_LABELS = ("service_name", "span_name", "span_kind", "status_code")
OVERFLOW_LABEL = "otel_metric_overflow"  # as exporters.families writes it
RESERVED_LABELS = frozenset({*BASE_LABELS, OVERFLOW_LABEL, "le", "job", "instance"})

SPAN_KINDS = (
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
)
STATUS_CODES = ("STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR")


def kind_text(kind: int) -> str:
    return SPAN_KINDS[kind] if 0 <= kind < len(SPAN_KINDS) else SPAN_KINDS[0]


def status_text(status: int) -> str:
    return STATUS_CODES[status] if 0 <= status < len(STATUS_CODES) else STATUS_CODES[0]


# The connector's default buckets, in seconds.
DEFAULT_BUCKETS = (
    0.002, 0.004, 0.006, 0.008, 0.01, 0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.4, 2.0, 5.0, 10.0, 15.0,
)  # fmt: skip

LabelName = Annotated[str, Field(pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$", max_length=100)]


class Dimension(StrictModel):
    name: LabelName = Field(description="The Prometheus label.")
    attribute: str = Field(
        min_length=1,
        description="The span attribute it is read from; the resource's attribute of that "
        "name is used when the span has none.",
    )
    default: str = Field("", description="The value when neither has the attribute.")


DEFAULT_DIMENSIONS = (
    Dimension(name="exchange", attribute="exchange.id"),
    Dimension(name="method", attribute="ccxt.method"),
    Dimension(name="error_type", attribute="error.type"),
)


class SpanMetricsConfig(StrictModel):
    enabled: bool = Field(True, description="Aggregate received spans into RED metrics.")
    dimensions: list[Dimension] = Field(
        default_factory=lambda: list(DEFAULT_DIMENSIONS),
        max_length=20,
        description="Labels added to span_name, span_kind, status_code and service_name.",
    )
    buckets: Buckets = Field(
        default_factory=lambda: list(DEFAULT_BUCKETS),
        description="Histogram bucket upper bounds, in seconds, increasing.",
    )
    max_series: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="Cardinality limit: label sets past it fold into one series labelled "
        'otel_metric_overflow="true".',
    )
    series_expiry: Duration = Field(
        900.0, description="Label sets not updated for this long are dropped."
    )
    exemplars: bool = Field(
        True, description="Attach trace_id/span_id exemplars (served with OpenMetrics)."
    )
    max_label_value_length: int = Field(
        128,
        ge=8,
        le=65536,
        description="Label values (service_name, span_name, dimensions) longer than this many "
        'characters are cut to it, ending in "..."; such spans are counted in '
        'tickscope_spanmetrics_truncated_spans_total{reason="label_value_length"}. At the '
        "default, 2,000 series of 20 lines each stay under ~30 MB of exposition.",
    )
    max_attributes_per_span: int = Field(
        128,
        ge=1,
        le=65536,
        description="Only a span's first this many attributes are read for dimensions (the "
        "OTel SDKs' default attribute count limit); spans with more are counted in "
        'tickscope_spanmetrics_truncated_spans_total{reason="attribute_count"}.',
    )

    @field_validator("dimensions")
    @classmethod
    def _distinct(cls, dims: list[Dimension]) -> list[Dimension]:
        seen: set[str] = set()
        for dim in dims:
            if dim.name in RESERVED_LABELS:
                raise ValueError(f"dimension name {dim.name!r} is reserved")
            if dim.name in seen:
                raise ValueError(f"dimension name {dim.name!r} is used twice")
            seen.add(dim.name)
        return dims


class SpanMetrics:
    """The span metrics' series, which exporters.spanstream counts into, and their exposition."""

    def __init__(self, config: SpanMetricsConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self.registry = registry
        self.max_label_value_length = config.max_label_value_length
        self.max_attributes = config.max_attributes_per_span
        truncated = Counter(
            "tickscope_spanmetrics_truncated_spans_total",
            "Spans counted with a label value cut to spanmetrics.max_label_value_length "
            "(reason=label_value_length) or with attributes past "
            "spanmetrics.max_attributes_per_span left unread (reason=attribute_count).",
            ["reason"],
            registry=registry,
        )
        self.truncated_length = truncated.labels("label_value_length")
        self.truncated_attributes = truncated.labels("attribute_count")
        self.dim_names = tuple(d.name for d in config.dimensions)
        self.dim_attributes = tuple(d.attribute for d in config.dimensions)
        self.dim_defaults = tuple(d.default for d in config.dimensions)
        self.overflow_total = Counter(
            "tickscope_spanmetrics_overflow_total",
            "Spans counted in the overflow series because the cardinality limit was reached.",
            registry=registry,
        )
        self.expired_total = Counter(
            "tickscope_spanmetrics_expired_series_total",
            "Label sets dropped after spanmetrics.series_expiry without an update.",
            registry=registry,
        )
        # One family holds both: calls_total is each series' total count.
        self.histogram = HistogramFamily(
            DURATION,
            "Duration of spans, in seconds, per label set.",
            BASE_LABELS + self.dim_names,
            config.max_series,
            config.buckets,
            on_overflow=self.overflow_total.inc,
        )
        self._last_expiry = time.monotonic()
        self._expiry_every = min(60.0, config.series_expiry / 10)
        # Per batch: (series, bucket, span, duration) to become exemplars at the end
        # of the batch, at most one per bucket per second (see SpanStream).
        self.touched: list[Pending] = []
        series = Gauge(
            "tickscope_spanmetrics_series",
            "Label sets the span metrics hold, the overflow series included.",
            registry=registry,
        )
        series.set_function(lambda: len(self.histogram))
        limit = Gauge(
            "tickscope_spanmetrics_series_limit",
            "The span metrics' cardinality limit (spanmetrics.max_series).",
            registry=registry,
        )
        limit.set(config.max_series)

    def series_count(self) -> int:
        return len(self.histogram)

    def new_series(self, key: tuple[Any, ...], now: float) -> Any:
        """Create the series for a key (service, span name, kind and status codes
        as numbers, dimension values): the enums become their text labels here,
        once, instead of per span."""
        service, name, kind, status, *dims = key
        labels = (service, name, kind_text(kind), status_text(status), *dims)
        return self.histogram.slot_for(key, now, labels)

    def end_batch(self, now: float) -> None:
        """Make the batch's exemplars; expire old series."""
        if self.touched:
            fill_exemplars(self.touched)
        self.maybe_expire(now)

    def maybe_expire(self, now: float) -> None:
        # Also called at scrape time: without traffic, no batch would expire anything.
        if now - self._last_expiry >= self._expiry_every:
            self.expire(now)

    def expire(self, now: float) -> int:
        self._last_expiry = now
        dropped = self.histogram.expire(now - self.config.series_expiry)
        if dropped:
            self.expired_total.inc(dropped)
        return dropped

    # -- exposition ----------------------------------------------------------

    def family_names(self) -> Iterable[str]:
        return (CALLS, CALLS.removesuffix("_total"), *self.histogram.sample_names())

    def render(self, out: Lines, openmetrics: bool, names: frozenset[str] | None) -> None:
        self.maybe_expire(time.monotonic())
        slots = self.histogram.slots()
        if slots and (names is None or CALLS in names or CALLS.removesuffix("_total") in names):
            help_lines(out, CALLS, "counter", "Number of spans, per label set.", openmetrics)
            for slot in slots:
                line = f"{CALLS}{{{slot.labels}}} {sum(slot.counts)}.0"
                if openmetrics:
                    # The counter's exemplar: the newest of the bucket exemplars.
                    newest = max(
                        (e for e in slot.exemplars if e is not None),
                        key=lambda e: e[3],
                        default=None,
                    )
                    if newest is not None:
                        line += format_exemplar((newest[0], newest[1], 1.0, newest[3]))
                out.append(line + "\n")
                out.spill()
        self.histogram.render(out, openmetrics, names)
