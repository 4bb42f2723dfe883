"""Exponential histogram maths, as pure functions over {bucket index: count} maps.

Positive bucket i of scale s covers (b^i, b^(i+1)] with b = 2^(2^-s); negative
bucket i covers [-b^(i+1), -b^i). Downscaling by one halves the resolution:
index i goes to i >> 1 (an arithmetic shift, right for negative indices too), as
the SDK merges histograms of different scales.
"""

from __future__ import annotations

import collections
import math
from typing import Any

__all__ = ["MIN_SCALE", "buckets_of", "downscale", "le_buckets", "merge"]

# The specification's smallest scale: base 2^(2^10), a bucket per 1024 powers of two.
MIN_SCALE = -10


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


def le_buckets(
    scale: int,
    positive: dict[int, float],
    negative: dict[int, float],
    zero_threshold: float,
    zero_count: float,
    max_buckets: int,
) -> tuple[list[float], list[float]]:
    """(le bounds, counts per bucket), ascending: what an exponential histogram
    becomes as explicit buckets. Downscaled until it has at most `max_buckets`
    (or MIN_SCALE is reached); the zero bucket's le is the zero threshold."""
    while len(positive) + len(negative) + 1 > max_buckets and scale > MIN_SCALE:
        positive, negative, scale = downscale(positive, 1), downscale(negative, 1), scale - 1
    base = 2.0 ** (2.0**-scale)
    bounds: list[float] = []
    counts: list[float] = []
    for index in sorted(negative, reverse=True):  # most negative first
        bounds.append(-(base**index))
        counts.append(negative[index])
    bounds.append(zero_threshold)
    counts.append(zero_count)
    for index in sorted(positive):
        upper = base ** (index + 1)
        if math.isinf(upper):
            break
        bounds.append(upper)
        counts.append(positive[index])
    return bounds, counts
