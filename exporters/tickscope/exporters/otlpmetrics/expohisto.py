"""Exponential histogram maths, as pure functions over {bucket index: count} maps.

Positive bucket i of scale s covers (b^i, b^(i+1)] with b = 2^(2^-s); negative
bucket i covers [-b^(i+1), -b^i). Downscaling by one halves the resolution:
index i goes to i >> 1 (an arithmetic shift, right for negative indices too), as
the SDK merges histograms of different scales.
"""

from __future__ import annotations

import collections
import decimal
import math
from typing import Any

__all__ = [
    "MAX_SCALE",
    "MIN_SCALE",
    "BoundCache",
    "bound",
    "buckets_of",
    "downscale",
    "le_buckets",
    "merge",
    "representable",
]

# The specification's smallest scale: base 2^(2^10), a bucket per 1024 powers of two.
MIN_SCALE = -10
# And its largest: 2^(2^-20), a bucket per 2^-20 of a power of two.
MAX_SCALE = 20
_MAX_EXPONENT = 1023  # 2^1024 is past the largest double
_MIN_NORMAL = -1022
_MIN_EXPONENT = -1074  # the smallest subnormal
_DECIMAL = decimal.Context(prec=25, Emax=decimal.MAX_EMAX, Emin=decimal.MIN_EMIN)
_TWO = decimal.Decimal(2)


def buckets_of(point: Any, which: str) -> dict[int, float]:
    """The populated buckets of a point's `positive` or `negative` side, by index."""
    b = getattr(point, which)
    return {b.offset + i: float(c) for i, c in enumerate(b.bucket_counts) if c}


def downscale(buckets: dict[int, float], by: int) -> dict[int, float]:
    if by <= 0:
        return buckets
    merged: dict[int, float] = collections.defaultdict(float)
    for index, count in buckets.items():
        merged[index >> by] += count
    return dict(merged)


def merge(
    scale: int,
    buckets: dict[int, float],
    other_scale: int,
    other: dict[int, float],
) -> tuple[int, dict[int, float]]:
    """Both sides at the smaller of the two scales, added: (scale, buckets)."""
    to = min(scale, other_scale)
    merged = dict(downscale(buckets, scale - to))
    for index, count in downscale(other, other_scale - to).items():
        merged[index] = merged.get(index, 0.0) + count
    return to, merged


class BoundCache:
    """Correctly rounded 2^(r / 2^scale) mantissas (0 < r < 2^scale), remembered: each
    costs ~31 us of 25-digit decimal arithmetic, and a scrape renders every bucket
    again. At most `limit` entries (~150 bytes each: 16,384 measured at ~2.5 MB); when
    full it starts over, so a stream of distinct buckets costs time, never memory."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._values: dict[tuple[int, int], float] = {}

    def mantissa(self, scale: int, r: int) -> float:
        key = (scale, r)
        value = self._values.get(key)
        if value is None:
            # float ** is not correctly rounded: 11 of 20,000 random (scale, r) pairs
            # were 1 ulp off against a 60-digit decimal; this 25-digit one, 0 of them.
            value = float(_DECIMAL.power(_TWO, _DECIMAL.divide(decimal.Decimal(r), 1 << scale)))
            if len(self._values) >= self.limit:
                self._values.clear()
            self._values[key] = value
        return value


# For callers without a store (tests, tools); the store passes its own, sized by config.
DEFAULT_CACHE = BoundCache(16_384)


def bound(scale: int, k: int, cache: BoundCache = DEFAULT_CACHE) -> float:
    """2^(k / 2^scale), correctly rounded; inf past the largest double, 0.0 below the
    smallest. Computed for each bound on its own, never as base**k: with base already
    rounded the error compounds (scale 1 gave 2.0000000000000004 for 2)."""
    if scale <= 0:
        exponent = k << -scale  # an integer: an exact power of two
        if exponent > _MAX_EXPONENT:
            return math.inf
        return math.ldexp(1.0, max(exponent, _MIN_EXPONENT - 1))  # underflows to 0.0
    q, r = divmod(k, 1 << scale)  # 2^q * 2^(r / 2^scale), r in [0, 2^scale)
    if q > _MAX_EXPONENT:
        return math.inf
    if r == 0:
        return math.ldexp(1.0, max(q, _MIN_EXPONENT - 1))
    if q >= _MIN_NORMAL:
        # The mantissa in [1, 2) is correctly rounded, and scaling it by 2^q is exact
        # in the normal range; 2^q * m < 2^1024 for q = 1023 since m < 2.
        return math.ldexp(cache.mantissa(scale, r), q)
    # Subnormal results: scaling a rounded mantissa would round twice.
    return float(_DECIMAL.power(_TWO, _DECIMAL.divide(decimal.Decimal(k), 1 << scale)))


def representable(
    scale: int,
    positive: dict[int, float],
    negative: dict[int, float],
    cache: BoundCache = DEFAULT_CACHE,
) -> bool:
    """Whether every populated bucket holds doubles at all: a bucket whose nearer bound
    (b^index) is past the largest double holds none, so no le can be written for it."""
    top = max((*positive, *negative), default=None)
    return top is None or not math.isinf(bound(scale, top, cache))


def le_buckets(
    scale: int,
    positive: dict[int, float],
    negative: dict[int, float],
    zero_threshold: float,
    zero_count: float,
    max_buckets: int,
    cache: BoundCache = DEFAULT_CACHE,
) -> tuple[list[float], list[float]]:
    """(le bounds, counts per bucket), strictly ascending; one count more than bounds,
    the last the +Inf bucket's own:
    what an exponential histogram becomes as explicit buckets. Downscaled until it has
    at most `max_buckets` (or MIN_SCALE is reached); the zero bucket's le is the zero
    threshold, and buckets that lie inside the zero bucket (a threshold widened by a
    merge) count in it. A positive bucket whose le is past the largest double counts
    in +Inf only (the count the caller adds up as the +Inf bucket); buckets whose
    bounds round to the same double (subnormals) share one le. Never raises for
    buckets that pass `representable`."""
    while len(positive) + len(negative) + 1 > max_buckets and scale > MIN_SCALE:
        positive, negative, scale = downscale(positive, 1), downscale(negative, 1), scale - 1
    pairs: list[tuple[float, float]] = []
    for index in sorted(negative, reverse=True):  # most negative first
        if bound(scale, index + 1, cache) <= zero_threshold:
            zero_count += negative[index]  # [-b^(i+1), -b^i) inside [-t, t]
        else:
            pairs.append((-bound(scale, index, cache), negative[index]))
    pairs.append((zero_threshold, zero_count))
    zero = len(pairs) - 1
    infinite = 0.0
    for index in sorted(positive):
        upper = bound(scale, index + 1, cache)
        if math.isinf(upper):
            infinite += positive[index]  # (b^i, 2^1024): +Inf only
            continue
        if upper <= zero_threshold:
            pairs[zero] = (zero_threshold, pairs[zero][1] + positive[index])
            continue
        pairs.append((upper, positive[index]))
    bounds: list[float] = []
    counts: list[float] = []
    for le, count in pairs:
        if bounds and le <= bounds[-1]:  # -0.0 beside 0.0, or subnormals rounding together
            counts[-1] += count
            continue
        bounds.append(0.0 if le == 0 else le)
        counts.append(count)
    counts.append(infinite)
    return bounds, counts
