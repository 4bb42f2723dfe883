"""Pre-rendered exposition for the high-cardinality families built from spans.

prometheus_client 0.2x formats every sample from scratch: it validates and
escapes each label name and value on each line, ~8.6 µs per line here. The span
metrics at their default limit of 2,000 label sets are ~40,000 lines, which
would hold the event loop (and so the OTLP receivers) for ~350 ms per scrape.
Families built here escape each series' labels once, when the series is
created, and render a line as a string concatenation (~0.3 µs). The output is
the same text prometheus_client writes (text format 0.0.4 or OpenMetrics 1.0, with
exemplars in OpenMetrics); tests parse it with prometheus_client's own parsers
and promtool. Everything else on /metrics is rendered by prometheus_client.

Families render into `Lines`, which hands its text on every SPILL_LINES lines
(families call `spill()` between series), so a render never holds all its lines:
measured at 40,000 label sets (800,000 lines, 176 MB of text), one list of every
line rendered at 0.43 µs/line against 0.22 at 1,000 label sets, pieces of a few
hundred lines at 0.15-0.16 µs/line at both, and memory stays one piece.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

__all__ = [
    "SPILL_LINES",
    "Exemplar",
    "Lines",
    "RenderedFamilies",
    "braces",
    "escape_help",
    "escape_label_value",
    "format_exemplar",
    "format_value",
    "join_labels",
    "label_text",
    "sample_names",
    "sorted_label_text",
]

# (trace_id hex, span_id hex, observed value, unix seconds)
Exemplar = tuple[str, str, float, float]


# Lines per piece of rendered text (~110 KB at the span metrics' ~220 bytes a
# line): small enough that joining, encoding and gzipping a piece stays in the
# CPU's cache. Rendered to gzipped OpenMetrics, µs per line at 100 / 1,600 /
# 12,800 label sets: 0.61 / 0.55 / 0.55 with 512 (as with 128 or 256), 0.72 /
# 0.71 / 0.66 with 8,192.
SPILL_LINES = 512


class Lines(list[str]):
    """Exposition lines being rendered. With a sink, `spill()` hands the lines so
    far on as one string once there are SPILL_LINES of them and starts over; the
    sink sees every line once, in order, when `flush()` ends the render. Without
    one (tests, small renders) it is a plain list that keeps everything."""

    __slots__ = ("_sink",)

    def __init__(self, sink: Callable[[str], None] | None = None) -> None:
        super().__init__()
        self._sink = sink

    def spill(self) -> None:
        """Between two series: hand the text on if a piece is full."""
        if len(self) >= SPILL_LINES and self._sink is not None:
            self._sink("".join(self))
            self.clear()

    def flush(self) -> None:
        """The render is over: hand on what is left."""
        if self and self._sink is not None:
            self._sink("".join(self))
            self.clear()


class RenderedFamilies(Protocol):
    """A source of families that renders itself into exposition text."""

    def family_names(self) -> Iterable[str]:
        """Every sample name it may emit (for /metrics?name[]=...)."""
        ...

    def render(self, out: Lines, openmetrics: bool, names: frozenset[str] | None) -> None:
        """Append lines (each ending in a newline) for the families in `names`
        (all when None), calling `out.spill()` between series."""
        ...


def escape_label_value(value: str) -> str:
    if "\\" in value or '"' in value or "\n" in value:
        return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
    return value


def label_text(names: Sequence[str], values: Sequence[str]) -> str:
    """`a="1",b="2"`: the inside of the braces, escaped, in the order given."""
    return ",".join(f'{n}="{escape_label_value(v)}"' for n, v in zip(names, values, strict=True))


def sorted_label_text(labels: dict[str, str]) -> str:
    """`a="1",b="2"` from a mapping, sorted by name (as prometheus_client orders them)."""
    return ",".join(f'{k}="{escape_label_value(v)}"' for k, v in sorted(labels.items()))


def braces(labels: str) -> str:
    """`{labels}`, or nothing for a series without labels."""
    return f"{{{labels}}}" if labels else ""


def join_labels(labels: str, extra: str) -> str:
    """Label text with one more pair (`le`, `quantile`) appended."""
    return f"{labels},{extra}" if labels else extra


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def sample_names(name: str, kind: str) -> tuple[str, ...]:
    """Every sample name a family of this kind emits (what /metrics?name[]= matches):
    a counter also by its name without _total, histograms and summaries by their series."""
    if kind == "counter":
        return (name, name.removesuffix("_total"))
    if kind in ("histogram", "summary"):
        return (name, f"{name}_bucket", f"{name}_count", f"{name}_sum")
    return (name,)


def format_value(value: float) -> str:
    """As prometheus_client writes values: Go's float syntax, integers with .0."""
    if isinstance(value, int):
        return f"{value}.0"
    if value == math.inf:
        return "+Inf"
    if value == -math.inf:
        return "-Inf"
    if value != value:
        return "NaN"
    return repr(value)


def format_exemplar(exemplar: Exemplar) -> str:
    trace_id, span_id, value, timestamp = exemplar
    return f' # {{trace_id="{trace_id}",span_id="{span_id}"}} {format_value(value)} {timestamp:.3f}'


def help_lines(out: list[str], name: str, kind: str, doc: str, openmetrics: bool) -> None:
    """HELP and TYPE; counters are named without _total in OpenMetrics only."""
    # removesuffix, not a slice: a name that is "_total" alone or lacks it keeps its name
    # (the OTLP store refuses a counter named "total", which would have no family name).
    family = name.removesuffix("_total") if openmetrics and kind == "counter" else name
    out.append(f"# HELP {family} {doc}\n# TYPE {family} {kind}\n")
