"""What a data point must be for its exposition to be valid for Prometheus's and
OpenMetrics's parsers, checked at ingest: a point that fails is refused (counted by
reason, in the partial-success answer), never stored, so rendering cannot fail on it.

Refused (reason `invalid_value`): a monotonic sum's value negative or NaN (an
OpenMetrics counter is neither); a histogram's or summary's sum NaN (_sum is
counter-like); a summary's quantile value negative (the OpenMetrics parser rejects
it; NaN, an empty summary's value, is allowed).

Refused (reason `invalid_buckets`): explicit bounds that are NaN, infinite (+Inf is
the implicit last bucket) or not strictly increasing; bucket counts that are neither
none nor one more than the bounds; a count that is not the total of the buckets (the
+Inf bucket must equal _count); an exponential histogram's scale outside the
specification's [-10, 20], a zero threshold negative, NaN or infinite, or a populated
bucket that holds no double (its nearer bound past the largest double); quantiles
outside [0, 1], NaN or repeated.

Repaired: an exemplar whose trace_id is not 16 bytes or span_id not 8 is dropped
(the point is kept): OpenMetrics allows 128 characters of exemplar labels, which
hex ids of those sizes and the names trace_id/span_id keep to 63.
"""

from __future__ import annotations

import math
from typing import Any

from tickscope.exporters.otlpmetrics import expohisto

__all__ = ["INVALID_BUCKETS", "INVALID_VALUE", "check", "valid_exemplar"]

INVALID_VALUE = "invalid_value"
INVALID_BUCKETS = "invalid_buckets"


def valid_exemplar(exemplar: Any) -> bool:
    return len(exemplar.trace_id) == 16 and len(exemplar.span_id) == 8


def _number(point: Any) -> float:
    return point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)


def check(
    point: Any, data: str, kind: str, cache: expohisto.BoundCache = expohisto.DEFAULT_CACHE
) -> tuple[str, str] | None:
    """(reason, why) for a point that cannot be served; None for one that can.
    `data` is the metric's oneof, `kind` its Prometheus type; `cache` the store's
    exponential bounds."""
    if data == "sum" and kind == "counter":
        value = _number(point)
        if math.isnan(value) or value < 0:
            return INVALID_VALUE, f"a counter's value {value!r} (negative or NaN)"
    elif data == "histogram":
        return _histogram(point)
    elif data == "exponential_histogram":
        return _exponential(point, cache)
    elif data == "summary":
        return _summary(point)
    return None


def _histogram(point: Any) -> tuple[str, str] | None:
    bounds = point.explicit_bounds
    for i, bound in enumerate(bounds):
        if not math.isfinite(bound):
            return INVALID_BUCKETS, f"bucket bound {bound!r} (NaN or infinite)"
        if i and bound <= bounds[i - 1]:
            return INVALID_BUCKETS, "bucket bounds not strictly increasing"
    counts = point.bucket_counts
    if counts and len(counts) != len(bounds) + 1:
        return INVALID_BUCKETS, f"{len(counts)} bucket counts for {len(bounds)} bounds"
    if sum(counts) != point.count:
        return INVALID_BUCKETS, f"count {point.count} is not the buckets' total {sum(counts)}"
    if point.HasField("sum") and math.isnan(point.sum):
        return INVALID_VALUE, "a histogram's sum is NaN"
    return None


def _exponential(point: Any, cache: expohisto.BoundCache) -> tuple[str, str] | None:
    scale = point.scale
    if not expohisto.MIN_SCALE <= scale <= expohisto.MAX_SCALE:
        return INVALID_BUCKETS, f"scale {scale} outside [-10, 20]"
    threshold = point.zero_threshold
    if not (math.isfinite(threshold) and threshold >= 0):
        return INVALID_BUCKETS, f"zero threshold {threshold!r}"
    positive = expohisto.buckets_of(point, "positive")
    negative = expohisto.buckets_of(point, "negative")
    total = point.zero_count + sum(point.positive.bucket_counts)
    total += sum(point.negative.bucket_counts)
    if total != point.count:
        return INVALID_BUCKETS, f"count {point.count} is not the buckets' total {total}"
    if not expohisto.representable(scale, positive, negative, cache):
        return INVALID_BUCKETS, f"buckets past the largest double at scale {scale}"
    if math.isnan(point.sum):
        return INVALID_VALUE, "a histogram's sum is NaN"
    return None


def _summary(point: Any) -> tuple[str, str] | None:
    seen: set[float] = set()
    for q in point.quantile_values:
        if not 0 <= q.quantile <= 1:  # False for NaN too
            return INVALID_BUCKETS, f"quantile {q.quantile!r} outside [0, 1]"
        if q.quantile in seen:
            return INVALID_BUCKETS, f"quantile {q.quantile!r} twice"
        seen.add(q.quantile)
        if q.value < 0:
            return INVALID_VALUE, f"quantile value {q.value!r} is negative"
    if math.isnan(point.sum):
        return INVALID_VALUE, "a summary's sum is NaN"
    return None
