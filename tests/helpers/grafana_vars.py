"""Grafana's interpolation of a Prometheus panel target, as pure functions.

What Grafana 11 does before it sends a target's `expr` to a Prometheus datasource,
so that a test (or a screenshot) can run exactly the query a panel would:

- the query interval: `rangeutil.calculateInterval` (the time range divided by the
  panel's max data points, rounded by `roundInterval`, never below the panel's or the
  datasource's min interval), then the Prometheus datasource's `adjustInterval`
  (the target's min step and interval factor, and at most 11,000 points);
- the built-ins `$__interval`, `$__interval_ms`, `$__rate_interval` (the larger of
  `$__interval` + the scrape interval and 4 x the scrape interval), `$__rate_interval_ms`,
  `$__range`, `$__range_s`, `$__range_ms`;
- template variables in every syntax Grafana accepts: `$var`, `${var}`, `${var:format}`,
  `[[var]]`, `[[var:format]]`, with each filter at "All" (a custom allValue is
  substituted as it is, unformatted, except by the `text` format).

Anything left unresolved is an error, never passed on: `interpolate` raises on an
unknown variable and on any `$` left in the result.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "DEFAULT_SCRAPE_INTERVAL",
    "InterpolationError",
    "PanelQuery",
    "QueryOptions",
    "Value",
    "builtins",
    "calculate_interval",
    "dashboard_variables",
    "interpolate",
    "interval_to_seconds",
    "js_number",
    "max_data_points",
    "panel_queries",
    "relative_range_ms",
    "round_interval",
    "seconds_to_hms",
    "walk_panels",
]

# The Prometheus datasource's scrape interval when its "Scrape interval" (jsonData
# timeInterval) is not set.
DEFAULT_SCRAPE_INTERVAL = "15s"
# Prometheus refuses range queries of more than 11,000 points.
MAX_POINTS = 11000

# Grafana's variableRegex (public/app/features/variables/utils.ts): $var,
# [[var]] / [[var:fmt]], ${var} / ${var.field} / ${var:fmt}.
VARIABLE_RE = re.compile(
    r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^\}]+))?(?::([^\}]+))?\}"
)
INTERVAL_RE = re.compile(r"^(-?\d+(?:\.\d+)?)(ms|[Mwdhmsy])")
INTERVAL_SECONDS: dict[str, float] = {
    "y": 31536000,
    "M": 2592000,
    "w": 604800,
    "d": 86400,
    "h": 3600,
    "m": 60,
    "s": 1,
    "ms": 0.001,
}
# roundInterval's table: (below this many ms, round to this many ms).
ROUNDING: tuple[tuple[float, int], ...] = (
    (10, 1),
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (210000, 120000),
    (450000, 300000),
    (750000, 600000),
    (1050000, 900000),
    (1500000, 1200000),
    (2700000, 1800000),
    (5400000, 3600000),
    (9000000, 7200000),
    (16200000, 10800000),
    (32400000, 21600000),
    (86400000, 43200000),
    (604800000, 86400000),
    (1814400000, 604800000),
    (3628800000, 2592000000),
)
ONE_YEAR_MS = 31536000000
# Formats that do format a custom allValue (templateSrv.replace skips the others).
FORMATS_OF_ALL = frozenset({"text", "percentencode", "queryparam"})
KNOWN_FORMATS = frozenset(
    {
        "csv",
        "distributed",
        "doublequote",
        "glob",
        "html",
        "json",
        "lucene",
        "percentencode",
        "pipe",
        "queryparam",
        "raw",
        "regex",
        "singlequote",
        "sqlstring",
        "text",
        "date",
    }
)
RELATIVE_RE = re.compile(r"^now-(\d+)(ms|[smhdwMy])$")


class InterpolationError(ValueError):
    """A target expression Grafana would not turn into a complete query."""


@dataclass(frozen=True)
class Value:
    """What a variable becomes: `value` in every form but `${var:text}`, which gives `text`."""

    value: str
    text: str


def js_number(x: float) -> str:
    """A number as JavaScript's String(x) writes it (1 -> "1", 0.5 -> "0.5")."""
    if not math.isfinite(x):
        raise InterpolationError(f"not a finite number: {x!r}")
    if x == int(x) and abs(x) < 1e21:
        return str(int(x))
    return repr(x)


def js_round(x: float) -> int:
    """JavaScript's Math.round: halves go up."""
    return math.floor(x + 0.5)


def interval_to_seconds(text: str) -> float:
    """rangeutil.intervalToSeconds: "15s" -> 15, "500ms" -> 0.5, "2" -> 2 (unit-less: s)."""
    try:
        number = float(text)
    except ValueError:
        number = 0.0
    if number:  # JavaScript's Number(str) is truthy: seconds, the integer part
        return float(int(number))
    match = INTERVAL_RE.match(text)
    if match is None:
        raise InterpolationError(f"invalid interval {text!r}")
    return int(float(match.group(1))) * INTERVAL_SECONDS[match.group(2)]


def round_interval(interval_ms: float) -> int:
    """rangeutil.roundInterval: a raw interval in ms to one of Grafana's steps."""
    for below, rounded in ROUNDING:
        if interval_ms < below:
            return rounded
    return ONE_YEAR_MS


def seconds_to_hms(seconds: float) -> str:
    """rangeutil.secondsToHms: the largest whole unit, "1s", "2m", "500ms"."""
    years = math.floor(seconds / 31536000)
    if years:
        return f"{years}y"
    days = math.floor((seconds % 31536000) / 86400)
    if days:
        return f"{days}d"
    hours = math.floor((seconds % 31536000 % 86400) / 3600)
    if hours:
        return f"{hours}h"
    minutes = math.floor((seconds % 31536000 % 86400 % 3600) / 60)
    if minutes:
        return f"{minutes}m"
    secs = math.floor(seconds % 31536000 % 86400 % 3600 % 60)
    if secs:
        return f"{secs}s"
    millis = math.floor(seconds * 1000.0)
    if millis:
        return f"{millis}ms"
    return "less than a millisecond"


def calculate_interval(
    range_ms: float, max_data_points: int, low_limit: str | None = None
) -> tuple[int, str]:
    """rangeutil.calculateInterval: (intervalMs, interval) for a range and resolution."""
    if max_data_points < 1:
        raise InterpolationError("max_data_points must be at least 1")
    low_limit_ms = interval_to_seconds(low_limit) * 1000 if low_limit else 1.0
    interval_ms: float = round_interval(range_ms / max_data_points)
    if low_limit_ms > interval_ms:
        interval_ms = low_limit_ms
    return int(interval_ms), seconds_to_hms(interval_ms / 1000)


def relative_range_ms(start: str, end: str = "now") -> int:
    """The length of a relative dashboard time range ("now-1h" to "now"), in ms."""
    match = RELATIVE_RE.match(start)
    if end != "now" or match is None:
        raise InterpolationError(f"only now-N<unit> to now is supported, not {start!r}..{end!r}")
    return round(int(match.group(1)) * INTERVAL_SECONDS[match.group(2)] * 1000)


@dataclass(frozen=True)
class QueryOptions:
    """What Grafana knows when it runs one target: the dashboard's time range, the
    panel's resolution (its max data points, by default its width in pixels), the
    datasource's scrape interval (jsonData.timeInterval) and the panel's and target's
    own "Min interval" / "Min step" and interval factor, if set."""

    range_ms: int
    max_data_points: int
    scrape_interval: str | None = None  # None: the datasource has no timeInterval set
    panel_interval: str | None = None
    target_interval: str | None = None
    interval_factor: int = 1


@dataclass(frozen=True)
class Builtins:
    """Grafana's built-in variables for one query, and the step of its range query."""

    variables: dict[str, str]
    step_s: float


def builtins(options: QueryOptions) -> Builtins:
    """$__interval, $__rate_interval, $__range, ... for one query.

    The query runner computes the interval from the range and resolution, with the
    panel's min interval (else the datasource's scrape interval) as the floor; the
    Prometheus datasource (createQuery) then adjusts it for the target's min step,
    interval factor and the 11,000-point limit, and takes $__rate_interval from the
    interval before that adjustment.
    """
    # The query runner's floor: the panel's min interval, else the datasource's
    # timeInterval (unset: 1 ms); the datasource's own scrape interval defaults to 15s.
    low_limit = options.panel_interval or options.scrape_interval
    interval_ms, interval_text = calculate_interval(
        options.range_ms, options.max_data_points, low_limit
    )
    interval = interval_to_seconds(interval_text)
    min_interval = interval_to_seconds(options.target_interval or interval_text)
    scrape = options.target_interval or options.scrape_interval or DEFAULT_SCRAPE_INTERVAL
    scrape_s = interval_to_seconds(scrape) or 15.0
    range_s = math.ceil(options.range_ms / 1000)
    safe_interval = range_s / MAX_POINTS
    if safe_interval > 1:
        safe_interval = math.ceil(safe_interval)
    adjusted = max(interval * options.interval_factor, min_interval, safe_interval)
    rate_interval = max(interval + scrape_s, 4 * scrape_s)
    range_rounded = js_round(options.range_ms / 1000)
    variables = {
        "__interval": interval_text,
        "__interval_ms": js_number(interval_ms),
        "__rate_interval": f"{js_number(rate_interval)}s",
        "__rate_interval_ms": js_number(rate_interval * 1000),
        "__range": f"{range_rounded}s",
        "__range_s": str(range_rounded),
        "__range_ms": js_number(options.range_ms),
    }
    if adjusted != interval:
        variables["__interval"] = f"{js_number(adjusted)}s"
        variables["__interval_ms"] = js_number(adjusted * 1000)
    return Builtins(variables, adjusted)


def dashboard_variables(dashboard: Mapping[str, Any]) -> dict[str, Value]:
    """Every template variable of a dashboard as Grafana substitutes it with each
    filter at "All". A variable with includeAll must have an allValue (without one
    Grafana would join the values its query finds, which only a live Grafana knows);
    a constant is its query. The datasource variable is left out: a target's
    expression must not use it."""
    out: dict[str, Value] = {}
    for variable in dashboard.get("templating", {}).get("list", []):
        name = variable["name"]
        kind = variable.get("type")
        if kind == "datasource":
            continue
        if variable.get("includeAll"):
            all_value = variable.get("allValue")
            if not all_value:
                raise InterpolationError(
                    f"variable {name!r} includes All but has no allValue: "
                    "its All depends on the values a live Grafana finds"
                )
            out[name] = Value(all_value, "All")
        elif kind == "constant":
            out[name] = Value(str(variable["query"]), str(variable["query"]))
        else:
            current = variable.get("current") or {}
            value = current.get("value")
            if not isinstance(value, str):
                raise InterpolationError(
                    f"variable {name!r} ({kind}) has neither includeAll nor one current value"
                )
            out[name] = Value(value, str(current.get("text", value)))
    return out


def _substitute(
    name: str,
    fmt: str | None,
    field_path: str | None,
    variables: Mapping[str, Value],
    built: Mapping[str, str],
    expr: str,
) -> str:
    if field_path is not None:
        raise InterpolationError(f"field path ${{{name}.{field_path}}} not supported in {expr!r}")
    if name in built:
        if fmt not in (None, "raw", "text"):
            raise InterpolationError(f"format :{fmt} of built-in ${name} in {expr!r}")
        return built[name]
    if name not in variables:
        raise InterpolationError(f"unknown variable ${name} in {expr!r}")
    if fmt is not None:
        base = fmt.split(":", 1)[0]
        if base not in KNOWN_FORMATS:
            raise InterpolationError(f"unknown format :{fmt} of ${name} in {expr!r}")
        if base == "text":
            return variables[name].text
        if base in FORMATS_OF_ALL:
            raise InterpolationError(f"format :{fmt} of ${name} not supported in {expr!r}")
    return variables[name].value


def interpolate(expr: str, variables: Mapping[str, Value], built: Mapping[str, str]) -> str:
    """`expr` with every variable and built-in replaced, as Grafana sends it.

    Raises InterpolationError for an unknown variable or format, and for any `$`
    still in the result (Grafana would send it on; Prometheus would refuse it or,
    worse, read it as part of a regex)."""

    def replace(match: re.Match[str]) -> str:
        plain, bracket, bracket_fmt, braced, field_path, braced_fmt = match.groups()
        if plain is not None:
            return _substitute(plain, None, None, variables, built, expr)
        if bracket is not None:
            return _substitute(bracket, bracket_fmt, None, variables, built, expr)
        return _substitute(braced, braced_fmt, field_path, variables, built, expr)

    out = VARIABLE_RE.sub(replace, expr)
    if "$" in out:
        raise InterpolationError(f"'$' left after interpolation: {out!r} (from {expr!r})")
    return out


def walk_panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that is not a row, in order: top-level ones and those a collapsed
    row holds in its own `panels`."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from (p for p in panel.get("panels", []) if p.get("type") != "row")
        else:
            yield panel


def max_data_points(panel: Mapping[str, Any], dashboard_width_px: int = 1920) -> int:
    """The panel's resolution: its maxDataPoints, else (as Grafana) its width in
    pixels, here its share of the 24 grid columns of a `dashboard_width_px` screen."""
    explicit = panel.get("maxDataPoints")
    if isinstance(explicit, int) and explicit > 0:
        return explicit
    width = float(panel.get("gridPos", {}).get("w", 24))
    return max(1, round(width * dashboard_width_px / 24))


@dataclass(frozen=True)
class PanelQuery:
    """One target of a panel, interpolated: the query Grafana would send."""

    panel_title: str
    panel_id: int | None
    ref_id: str
    source: str  # the target's expr as the dashboard has it
    expr: str  # as Grafana sends it
    step_s: float  # the range query's step
    instant: bool  # Grafana runs an instant query
    range: bool  # Grafana runs a range query
    exemplar: bool
    hidden: bool


def panel_queries(
    dashboard: Mapping[str, Any], range_ms: int, scrape_interval: str | None
) -> list[PanelQuery]:
    """Every target of every panel, interpolated for a time range of `range_ms` on a
    Prometheus datasource whose scrape interval (timeInterval) is `scrape_interval`,
    with every filter at All. Raises InterpolationError naming the panel."""
    variables = dashboard_variables(dashboard)
    out: list[PanelQuery] = []
    for panel in walk_panels(dashboard):
        title = str(panel.get("title", ""))
        for target in panel.get("targets", []):
            source = target.get("expr")
            if not isinstance(source, str):
                raise InterpolationError(f"panel {title!r} target {target.get('refId')}: no expr")
            options = QueryOptions(
                range_ms=range_ms,
                max_data_points=max_data_points(panel),
                scrape_interval=scrape_interval,
                panel_interval=panel.get("interval") or None,
                target_interval=target.get("interval") or None,
                interval_factor=int(target.get("intervalFactor") or 1),
            )
            built = builtins(options)
            try:
                expr = interpolate(source, variables, built.variables)
            except InterpolationError as e:
                raise InterpolationError(
                    f"panel {title!r} target {target.get('refId')}: {e}"
                ) from e
            instant = bool(target.get("instant"))
            out.append(
                PanelQuery(
                    panel_title=title,
                    panel_id=panel.get("id"),
                    ref_id=str(target.get("refId", "")),
                    source=source,
                    expr=expr,
                    step_s=built.step_s,
                    instant=instant,
                    range=bool(target.get("range", not instant)),
                    exemplar=bool(target.get("exemplar")),
                    hidden=bool(target.get("hide")),
                )
            )
    return out
