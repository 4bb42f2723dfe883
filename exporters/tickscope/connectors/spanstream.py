"""One pass over each accepted trace batch, feeding every span aggregator.

The pass reads the batch through exporters.spanview (see there for why). Per
span it reads the attributes' *signature* (the wanted attributes, see
spanview.AttributeCache) and looks up, with the span's name, kind and status,
its *shape*: everything the aggregators derive from those (the span-metrics
series, whether the trading metrics want the span), worked out once per
distinct shape rather than once per span. A trading engine's spans come in a
few hundred shapes (exchange x method x outcome), so per span what is left is
reading its fields and counting into a histogram.

The span metrics' counting is inlined here: this loop runs for every span, and
a Python call costs ~0.1 µs. The trading metrics see only the spans that placed
an order or failed, and once per batch the newest rate-limit headers per exchange.
"""

from __future__ import annotations

import time
from bisect import bisect_left
from typing import Any

from tickscope.connectors.spanmetrics import SpanMetrics
from tickscope.connectors.trading import RATE_LIMIT_ATTRIBUTES, Plan, TradingMetrics
from tickscope.core.spanview import (
    STATUS_BY_BYTES,
    AttributeCache,
    anyvalue_to_str,
    decode_traces,
    status_code_of,
)
from tickscope.exposition.families import OVERFLOW

__all__ = ["SpanStream"]

UNKNOWN_SERVICE = "unknown_service"  # the OTel SDKs' default when service.name is unset
EXCHANGE = "exchange.id"
# Shapes held before the cache starts over: they are a few hundred; this bounds
# a high-cardinality dimension, which makes every span its own shape (~0.5 KiB each).
MAX_SHAPES = 16384
MAX_RESOURCES = 256

# What a span's name, kind, status and signature decide, as a tuple (unpacked
# in one step in the loop):
#   series: its span-metrics series (None without span metrics);
#   overflowed: that series is the overflow series (past the cardinality limit);
#   exchange: exchange.id of a ccxt span, else None;
#   plan: what the trading metrics count for it (TradingMetrics.plan), or None;
#   rate_limited: it carries rate-limit headers.
Shape = tuple[Any, bool, str | None, Plan | None, bool]


class SpanStream:
    def __init__(self, spanmetrics: SpanMetrics | None, trading: TradingMetrics | None) -> None:
        self.spanmetrics = spanmetrics
        self.trading = trading
        wanted: set[str] = set()
        if spanmetrics is not None:
            wanted |= set(spanmetrics.dim_attributes)
        marked: frozenset[str] = frozenset()
        if trading is not None:
            wanted |= trading.wanted_attributes
            marked = RATE_LIMIT_ATTRIBUTES
        self.attributes = AttributeCache(wanted, marked)
        # (service, dimension fallbacks) -> (name, kind, status code, *signature) -> Shape
        self._shapes: dict[tuple[str, ...], dict[tuple[Any, ...], Shape]] = {}
        self._generation = 0
        self._shape_count = 0
        self.spans = 0
        self.last_batch_valid = True

    def consume(self, raw: bytes) -> int:
        """Aggregate one serialized ExportTraceServiceRequest; returns its span count."""
        return self.consume_view(decode_traces(raw))

    def consume_view(self, view: Any) -> int:
        """Aggregate one request already parsed by exporters.spanview.

        Afterwards `last_batch_valid` says whether every attribute in it decoded
        (an attribute that does not is left out of the metrics, and the batch must
        not be forwarded: an upstream would refuse it, with whatever it is batched with).
        """
        invalid_before = self.attributes.invalid
        now = time.monotonic()
        spanmetrics = self.spanmetrics
        trading = self.trading
        attribute = self.attributes.entries.__getitem__
        resolve = self.attributes.resolve
        status_codes = STATUS_BY_BYTES
        # exchange -> its newest span with rate-limit headers in this batch
        limited: dict[str, Any] = {}
        if trading is not None:
            exchanges_seen = trading.exchanges_seen
            record = trading.record
        if spanmetrics is not None:
            dim_keys = spanmetrics.dim_attributes
            histogram = spanmetrics.histogram
            bounds = histogram.bounds
            touched = spanmetrics.touched
            overflow = spanmetrics.overflow_total.inc
            exemplars = spanmetrics.config.exemplars
            if histogram.generation != self._generation:
                # Series were dropped since the shapes were made: theirs may be gone.
                self._generation = histogram.generation
                self._shapes.clear()
        count = 0
        for resource_spans in view.resource_spans:
            resource = {
                kv.key: anyvalue_to_str(kv.value) for kv in resource_spans.resource.attributes
            }
            service = resource.get("service.name") or UNKNOWN_SERVICE
            fallbacks: tuple[str, ...] = ()
            if spanmetrics is not None:
                # A dimension the span lacks falls back to the resource's value, then
                # to its default: per resource, that fallback is fixed.
                fallbacks = tuple(
                    resource.get(key, default)
                    for key, default in zip(dim_keys, spanmetrics.dim_defaults, strict=True)
                )
            shapes = self._shapes_of(service, fallbacks)
            for scope_spans in resource_spans.scope_spans:
                spans = scope_spans.spans
                count += len(spans)
                for span in spans:
                    # The status code, not the Status bytes, goes into the shape: a
                    # description (often an exception's message) would make each
                    # failed span a shape of its own.
                    raw_status = span.status
                    status = status_codes.get(raw_status)
                    if status is None:
                        status = status_code_of(raw_status)
                    try:
                        # A slice makes the attributes' bytes ~40% faster than iterating.
                        what = (span.name, span.kind, status, *map(attribute, span.attributes[:]))
                    except KeyError:  # an attribute not seen before
                        what = (span.name, span.kind, status, *resolve(span.attributes))
                    shape = shapes.get(what)
                    if shape is None:
                        shape = self._shape(shapes, what, service, fallbacks, now)
                    series, overflowed, exchange, plan, rate_limited = shape
                    duration = (span.end_time_unix_nano - span.start_time_unix_nano) / 1e9
                    if duration < 0:
                        duration = 0.0  # clock skew between start and end: count it, as zero
                    if series is not None:
                        if overflowed:
                            overflow()
                        series.last_seen = now
                        index = bisect_left(bounds, duration)
                        series.counts[index] += 1
                        series.sum += duration
                        # Exemplars: at most one new one per bucket per second (a scrape
                        # shows one per bucket), which keeps the id hex-encoding rare.
                        if series.exemplar_due[index] <= now and exemplars:
                            series.exemplar_due[index] = now + 1.0
                            touched.append((series, index, span, duration))
                    if exchange is not None:
                        exchanges_seen.add(exchange)
                        if plan is not None:
                            record(plan, duration, span, now)
                        if rate_limited:
                            limited[exchange] = span
        if spanmetrics is not None:
            spanmetrics.end_batch(now)
        if trading is not None:
            for exchange, span in limited.items():
                trading.rate_limit_seen[exchange] = self.attributes.texts(
                    span.attributes, RATE_LIMIT_ATTRIBUTES
                )
            trading.end_batch(now)
        self.spans += count
        self.last_batch_valid = self.attributes.invalid == invalid_before
        return count

    def _shapes_of(self, service: str, fallbacks: tuple[str, ...]) -> dict[tuple[Any, ...], Shape]:
        resource = (service, *fallbacks)
        shapes = self._shapes.get(resource)
        if shapes is None:
            if len(self._shapes) >= MAX_RESOURCES:
                self._shapes.clear()
                self._shape_count = 0
            shapes = self._shapes[resource] = {}
        return shapes

    def _shape(
        self,
        shapes: dict[tuple[Any, ...], Shape],
        what: tuple[Any, ...],
        service: str,
        fallbacks: tuple[str, ...],
        now: float,
    ) -> Shape:
        name, kind, status, *signature = what
        attributes = self.attributes.pairs(signature)
        series = None
        overflowed = False
        if self.spanmetrics is not None:
            if not 0 <= kind <= 5:
                kind = 0  # an unknown enum value renders as UNSPECIFIED: key it so
            dims = map(attributes.get, self.spanmetrics.dim_attributes, fallbacks)
            key = (service, name, kind, status, *dims)
            histogram = self.spanmetrics.histogram
            series = histogram.lookup(key)
            if series is None:
                if len(histogram) >= histogram.max_series:
                    # Past the cardinality limit: the loop counts each span of this
                    # shape as overflow.
                    series = histogram.slot_for(OVERFLOW, now)
                    overflowed = True
                else:
                    series = self.spanmetrics.new_series(key, now)
        exchange: str | None = None
        plan = None
        rate_limited = False
        if self.trading is not None and EXCHANGE in attributes:  # a ccxt span
            exchange = attributes[EXCHANGE]
            plan = self.trading.plan(attributes, status)
            rate_limited = not RATE_LIMIT_ATTRIBUTES.isdisjoint(attributes)
        if self._shape_count >= MAX_SHAPES:
            for held in self._shapes.values():
                held.clear()
            self._shape_count = 0
        shape = shapes[what] = (series, overflowed, exchange, plan, rate_limited)
        self._shape_count += 1
        return shape
