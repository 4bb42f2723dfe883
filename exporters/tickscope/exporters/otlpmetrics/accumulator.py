"""Streams (one per metric and label set) and how each type of OTLP point
accumulates into one, as the Collector's prometheusexporter accumulator does.

- Gauge, non-monotonic cumulative Sum: the newest value.
- Monotonic Sum: cumulative points replace the value, delta points add to it
  (converted to cumulative). A cumulative stream that restarts (its start time
  changes, or its value goes down: the engine restarted) keeps counting from
  where it was (`offset`), so rate() sees neither a negative step nor a missed
  reset.
- Histogram: the same, bucket by bucket; new bounds make a new histogram.
- Exponential histogram: delta points merged exactly at the smaller scale.
- Summary: the newest quantiles, count and sum.

`fold` adds a point of a stream past the cardinality limit into the metric's
overflow stream, where that can be done correctly.
"""

from __future__ import annotations

import bisect
from typing import Any

from opentelemetry.proto.metrics.v1 import metrics_pb2

from tickscope.exporters.otlpmetrics import expohisto
from tickscope.exposition.text import Exemplar

__all__ = [
    "Exponential",
    "Histogram",
    "Stream",
    "Summary",
    "Value",
    "fold",
    "update",
]


class Stream:
    __slots__ = ("labels", "last_seen", "start", "time")

    def __init__(self, labels: str, now: float) -> None:
        self.labels = labels  # rendered label text, made once
        self.last_seen = now
        self.start = 0
        self.time = 0


class Value(Stream):
    __slots__ = ("exemplar", "offset", "value")

    def __init__(self, labels: str, now: float) -> None:
        super().__init__(labels, now)
        self.value = 0.0
        self.offset = 0.0
        self.exemplar: Exemplar | None = None


class Histogram(Stream):
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


class Exponential(Stream):
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


class Summary(Stream):
    __slots__ = ("count", "quantiles", "sum")

    def __init__(self, labels: str, now: float) -> None:
        super().__init__(labels, now)
        self.count = 0.0
        self.sum = 0.0
        self.quantiles: list[tuple[float, float]] = []


def exemplar_of(ex: metrics_pb2.Exemplar) -> Exemplar | None:
    # Ids of other sizes than OTLP's are dropped (and counted by the store): they could
    # make an exemplar's labels longer than OpenMetrics's 128 characters.
    if len(ex.trace_id) != 16 or len(ex.span_id) != 8:
        return None
    value = ex.as_double if ex.WhichOneof("value") == "as_double" else float(ex.as_int)
    return (ex.trace_id.hex(), ex.span_id.hex(), value, ex.time_unix_nano / 1e9)


def number(point: metrics_pb2.NumberDataPoint) -> float:
    return point.as_double if point.WhichOneof("value") == "as_double" else float(point.as_int)


def update(stream: Any, point: Any, delta: bool, data: str) -> None:
    """Accumulate `point` (of the metric's `data` oneof) into `stream`."""
    restarted = bool(
        point.start_time_unix_nano and stream.start and point.start_time_unix_nano != stream.start
    )
    if data in ("gauge", "sum"):
        value = number(point)
        if data == "sum" and isinstance(stream, Value):
            if delta:
                stream.value += value
            else:
                if restarted or value < stream.value:
                    stream.offset += stream.value  # the engine restarted: keep counting
                stream.value = value
            for ex in point.exemplars:
                stream.exemplar = exemplar_of(ex) or stream.exemplar
        else:
            stream.value = value
    elif data == "histogram":
        _histogram(stream, point, delta, restarted)
    elif data == "exponential_histogram":
        _exponential(stream, point, delta)
    else:
        stream.count = float(point.count)
        stream.sum = point.sum
        stream.quantiles = sorted((q.quantile, q.value) for q in point.quantile_values)
    stream.start = point.start_time_unix_nano or stream.start
    stream.time = point.time_unix_nano or stream.time


def _histogram(stream: Histogram, point: Any, delta: bool, restarted: bool) -> None:
    bounds = tuple(point.explicit_bounds)
    counts = [float(c) for c in point.bucket_counts]
    if len(counts) != len(bounds) + 1:
        counts = (counts + [0.0] * (len(bounds) + 1))[: len(bounds) + 1]
    if bounds != stream.bounds or not stream.counts:
        # New buckets (or the first point: `counts` is never empty after one, even for
        # a histogram with no explicit bounds, whose bounds () equal a new stream's):
        # a new histogram as far as Prometheus is concerned.
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
        exemplar = exemplar_of(ex)
        if exemplar is not None:
            stream.exemplars[bisect.bisect_left(bounds, exemplar[2])] = exemplar


def _exponential(stream: Exponential, point: Any, delta: bool) -> None:
    positive = expohisto.buckets_of(point, "positive")
    negative = expohisto.buckets_of(point, "negative")
    if not delta or not (stream.count or stream.zero_count):
        stream.scale, stream.positive, stream.negative = point.scale, positive, negative
        stream.zero_count, stream.sum, stream.count = (
            float(point.zero_count),
            point.sum,
            float(point.count),
        )
        stream.zero_threshold = point.zero_threshold  # the newest point is the whole state
    else:
        _, stream.positive = expohisto.merge(stream.scale, stream.positive, point.scale, positive)
        stream.scale, stream.negative = expohisto.merge(
            stream.scale, stream.negative, point.scale, negative
        )
        stream.zero_count += point.zero_count
        stream.sum += point.sum
        stream.count += point.count
        # Merged at the wider zero bucket: le_buckets counts the buckets that now lie
        # inside it as zero-bucket observations.
        stream.zero_threshold = max(stream.zero_threshold, point.zero_threshold)
    for ex in point.exemplars:
        exemplar = exemplar_of(ex)
        if exemplar is not None:
            stream.exemplars = [*stream.exemplars[-7:], exemplar]


class OverflowMemory:
    """Each overflowed stream's last cumulative value, so that only its increase
    is added to the overflow series. Bounded: when full it starts over, and an
    evicted stream's next value counts whole."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._last: dict[tuple[Any, ...], Any] = {}

    def get(self, key: tuple[Any, ...]) -> Any:
        return self._last.get(key)

    def remember(self, key: tuple[Any, ...], value: Any) -> None:
        if len(self._last) >= self.limit:
            self._last.clear()
        self._last[key] = value


def foldable(data: str) -> bool:
    """Whether points of this type can fold into an overflow series at all: an
    exponential histogram's buckets or a summary's quantiles cannot be added up
    across streams."""
    return data in ("gauge", "sum", "histogram")


def fold(
    kind: str,
    memory: OverflowMemory,
    key: tuple[Any, ...],
    overflow: Any,
    point: Any,
    delta: bool,
    data: str,
) -> bool:
    """Add an overflowed point to the overflow series; False if that cannot be done right."""
    if data == "gauge" or (data == "sum" and kind == "gauge"):
        overflow.value = number(point)
        return True
    if data == "sum":
        value = number(point)
        if not delta:
            last = memory.get(key) or 0.0
            memory.remember(key, value)
            value = value - last if value >= last else value
        overflow.value += value
        return True
    if data == "histogram":
        bounds = tuple(point.explicit_bounds)
        # `counts`, not `bounds`, says whether the overflow histogram has started:
        # bounds () are a histogram with the +Inf bucket alone.
        if overflow.counts and bounds != overflow.bounds:
            return False
        counts = [float(c) for c in point.bucket_counts][: len(bounds) + 1]
        counts += [0.0] * (len(bounds) + 1 - len(counts))
        total, summed = float(point.count), point.sum
        if not delta:
            previous = memory.get(key)
            memory.remember(key, (counts, total, summed))
            if previous is not None and total >= previous[1]:
                counts = [a - b for a, b in zip(counts, previous[0], strict=True)]
                total, summed = total - previous[1], summed - previous[2]
        if not overflow.counts:
            overflow.bounds, overflow.counts = bounds, [0.0] * len(counts)
            overflow.exemplars = [None] * len(counts)
        overflow.counts = [a + b for a, b in zip(overflow.counts, counts, strict=True)]
        overflow.count += total
        overflow.sum += summed
        overflow.has_sum = True
        return True
    return False
