"""Exposition text for translated OTLP metrics, on the shared exposition code
(tickscope.exposition.text) that the span metrics render with."""

from __future__ import annotations

import bisect
from typing import Any

from tickscope.exporters.otlpmetrics import expohisto
from tickscope.exporters.otlpmetrics.accumulator import Exponential
from tickscope.exposition.text import (
    Exemplar,
    Lines,
    braces,
    escape_help,
    format_exemplar,
    format_value,
    help_lines,
    join_labels,
)

__all__ = ["render_family", "render_targets"]


def render_targets(out: Lines, targets: Any, openmetrics: bool) -> None:
    if openmetrics:
        # The specification: target_info is an info-typed family `target` in OpenMetrics
        # (its samples keep the name target_info); the text format has no info type.
        out.append("# HELP target Target metadata\n# TYPE target info\n")
    else:
        help_lines(out, "target_info", "gauge", "Target metadata", openmetrics)
    for labels, _ in targets:
        out.append(f"target_info{{{labels}}} 1.0\n")
        out.spill()


def render_family(
    out: Lines,
    name: str,
    kind: str,
    doc: str,
    streams: Any,
    openmetrics: bool,
    max_exponential_buckets: int,
    unit: str = "",
    cache: expohisto.BoundCache = expohisto.DEFAULT_CACHE,
) -> None:
    help_lines(out, name, kind, escape_help(doc or name), openmetrics)
    if openmetrics and unit:
        family = name.removesuffix("_total") if kind == "counter" else name
        out.append(f"# UNIT {family} {unit}\n")
    for stream in streams:
        labels = stream.labels
        if kind == "gauge":
            out.append(f"{name}{braces(labels)} {format_value(stream.value)}\n")
        elif kind == "counter":
            line = f"{name}{braces(labels)} {format_value(stream.offset + stream.value)}"
            if openmetrics and stream.exemplar is not None:
                line += format_exemplar(stream.exemplar)
            out.append(line + "\n")
        elif kind == "summary":
            for quantile, value in stream.quantiles:
                q = join_labels(labels, f'quantile="{format_value(quantile)}"')
                out.append(f"{name}{{{q}}} {format_value(value)}\n")
            out.append(f"{name}_count{braces(labels)} {format_value(stream.count)}\n")
            if not openmetrics or stream.sum >= 0:
                # OpenMetrics's _sum is counter-like: a negative one is left out there.
                out.append(f"{name}_sum{braces(labels)} {format_value(stream.sum)}\n")
        else:
            _histogram(out, name, stream, openmetrics, max_exponential_buckets, cache)
        out.spill()


def _histogram(
    out: list[str],
    name: str,
    stream: Any,
    openmetrics: bool,
    max_exponential_buckets: int,
    cache: expohisto.BoundCache,
) -> None:
    labels = stream.labels
    exemplars: list[Exemplar | None]
    if isinstance(stream, Exponential):
        bounds, counts = expohisto.le_buckets(
            stream.scale,
            stream.positive,
            stream.negative,
            stream.zero_threshold,
            stream.zero_count,
            max_exponential_buckets,
            cache,
        )
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
        bucket_labels = join_labels(labels, 'le="' + le + '"')
        line = f"{name}_bucket{{{bucket_labels}}} {format_value(cumulative)}"
        exemplar = exemplars[i] if openmetrics and i < len(exemplars) else None
        if exemplar is not None:
            line += format_exemplar(exemplar)
        out.append(line + "\n")
    if openmetrics and not (has_sum and summed >= 0 and not (bounds and bounds[0] < 0)):
        # OpenMetrics 1.0: a histogram with negative buckets MUST NOT have a sum, _count
        # appears if and only if _sum does, and _sum is counter-like (never negative):
        # such histograms are served as their buckets alone (the text format keeps both).
        return
    out.append(f"{name}_count{braces(labels)} {format_value(total)}\n")
    if has_sum:
        out.append(f"{name}_sum{braces(labels)} {format_value(summed)}\n")
