"""OTLP metric and attribute names as Prometheus names.

The rules of the OpenTelemetry specification's "Prometheus and OpenMetrics
Compatibility" (OTLP Metric points to Prometheus), as prometheus/otlptranslator
implements them in its UnderscoreEscapingWithSuffixes strategy (the one
Prometheus and the Collector use by default):

- a name is split on every character outside [a-zA-Z0-9:] and re-joined with
  single underscores (so dots become underscores and runs collapse);
- the unit becomes a suffix unless the name already has it as a word: "ms" ->
  "milliseconds", "By/s" -> "bytes_per_second", "{packets}" -> nothing;
- a monotonic counter ends in "_total" (once); a gauge whose unit is "1" in
  "_ratio" (once); a counter's or an UpDownCounter's (kind "updowncounter") "1"
  adds nothing;
- a leading digit gets "_" in front.

Label names: invalid characters become "_", runs collapse, a leading digit gets
"key_", and attribute keys that collide after that are merged (values joined
with ";", in the order of the original keys).
"""

from __future__ import annotations

import re

__all__ = ["label_name", "metric_name", "openmetrics_unit", "unit_words"]

UNITS = {
    "d": "days", "h": "hours", "min": "minutes", "s": "seconds", "ms": "milliseconds",
    "us": "microseconds", "ns": "nanoseconds", "By": "bytes", "KiBy": "kibibytes",
    "MiBy": "mebibytes", "GiBy": "gibibytes", "TiBy": "tibibytes", "KBy": "kilobytes",
    "kBy": "kilobytes", "MBy": "megabytes", "GBy": "gigabytes", "TBy": "terabytes", "m": "meters", "V": "volts",
    "A": "amperes", "J": "joules", "W": "watts", "g": "grams", "Cel": "celsius", "Hz": "hertz",
    "%": "percent", "1": "",
}  # fmt: skip
PER_UNITS = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}

_NAME_TOKENS = re.compile(r"[^a-zA-Z0-9:]+")
_LABEL_INVALID = re.compile(r"[^a-zA-Z0-9_]+")
_UNDERSCORES = re.compile(r"__+")


def _tokens(text: str) -> list[str]:
    return [t for t in _NAME_TOKENS.split(text) if t]


def _contains(tokens: list[str], part: list[str]) -> bool:
    """Whether `part` occurs in `tokens` as consecutive words."""
    n = len(part)
    return any(tokens[i : i + n] == part for i in range(len(tokens) - n + 1))


def unit_words(unit: str) -> tuple[list[str], list[str]]:
    """(main unit words, per-unit words): "By/s" -> (["bytes"], ["per", "second"])."""
    unit = unit.strip()
    main, _, per = unit.partition("/")
    main, per = main.strip(), per.strip()
    words: list[str] = []
    if main and "{" not in main and "}" not in main:
        words = _tokens(UNITS.get(main, main))
    per_words: list[str] = []
    if per and "{" not in per and "}" not in per:
        per_words = _tokens(PER_UNITS.get(per, per))
        if per_words:
            per_words = ["per", *per_words]
    return words, per_words


def metric_name(name: str, unit: str, kind: str) -> str:
    """The Prometheus metric name; `kind` is "counter", "gauge", "histogram" or
    "summary". Counters include the "_total" suffix. Empty when nothing valid is
    left (the caller rejects the metric)."""
    tokens = _tokens(name)
    main, per = unit_words(unit)
    # Each part of the unit is added unless the name already carries it, as
    # consecutive words ("response_time_seconds" + "s" stays as it is).
    if main and not _contains(tokens, main):
        tokens.extend(main)
    if per and not _contains(tokens, per):
        tokens.extend(per)
    if kind == "counter":
        tokens = [t for t in tokens if t != "total"]
        tokens.append("total")
    elif kind == "gauge" and unit.strip() == "1":
        tokens = [t for t in tokens if t != "ratio"]
        tokens.append("ratio")
    result = "_".join(tokens)
    if result and result[0].isdigit():
        result = "_" + result
    return result


def openmetrics_unit(name: str, unit: str, kind: str) -> str:
    """The OpenMetrics UNIT of a family named `name` (its samples' name; a counter's
    with _total), or "" for none: the unit's words ("bytes", "bytes_per_second") when
    the family name ends with them, as OpenMetrics requires of a UNIT. Unit 1 and
    annotations give none."""
    main, per = unit_words(unit)
    words = "_".join([*main, *per])
    family = name.removesuffix("_total") if kind == "counter" else name
    return words if words and family.endswith("_" + words) else ""


def label_name(key: str) -> str:
    """A Prometheus label name for an attribute key; empty if nothing valid is left."""
    if key.startswith("__") and key.endswith("__") and len(key) > 4:
        # Prometheus reserves names starting with "__" (__name__ is the metric name
        # itself; the rest are dropped after relabelling), so such a key keeps its
        # shape behind a "key" prefix, as otlptranslator prefixes a leading "_".
        inner = _UNDERSCORES.sub("_", _LABEL_INVALID.sub("_", key[2:-2]))
        return f"key__{inner}__"
    name = _UNDERSCORES.sub("_", _LABEL_INVALID.sub("_", key))
    if not name.strip("_"):
        return ""
    if name[0].isdigit():
        name = "key_" + name
    return name
