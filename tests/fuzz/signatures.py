"""What a failure is, and its signature: the part that stays the same between two
inputs that hit the same bug (so a run reports each bug once, with its smallest input).

Pure functions, shared by the in-process harness and the atheris entry points.
"""

from __future__ import annotations

import re
import traceback
from dataclasses import dataclass

from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

__all__ = ["Failure", "check_exposition", "exception_signature", "normalize"]

TEXT = "text/plain; version=0.0.4"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@dataclass(frozen=True)
class Failure:
    signature: str
    detail: str


_QUOTED = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*(?:e[-+]?\d+)?|inf|nan)", re.IGNORECASE)
_TRAILING_NAME = re.compile(r": [A-Za-z_:][A-Za-z0-9_:]*$")
_NAME_IN_BRACES = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*\{[^}]*\}")


def normalize(message: str, limit: int = 90) -> str:
    """The constant part of a message: quoted strings, numbers and sample lines
    (name{labels}) replaced, so that different names and values hitting one bug
    give one signature."""
    out = _QUOTED.sub('"…"', message)
    out = _NAME_IN_BRACES.sub("NAME{…}", out)
    out = _NUMBER.sub("N", out)
    out = _TRAILING_NAME.sub(": NAME", out)
    out = " ".join(out.split())
    return out[:limit]


def exception_signature(exc: BaseException) -> str:
    """`Type at file:function` of the innermost frame in tickscope's own code
    (line numbers left out: the code moves while others fix it)."""
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/tickscope/" in f.filename and "/tests/" not in f.filename]
    where = ours[-1] if ours else (frames[-1] if frames else None)
    place = ""
    if where is not None:
        parts = where.filename.split("/tickscope/")
        place = f" at {parts[-1]}:{where.name}"
    return f"{type(exc).__name__}{place}"


def _first_error(text: str, parser: str) -> str | None:
    try:
        families = parse_openmetrics(text) if parser == "openmetrics" else parse_text(text)
        for _ in families:
            pass
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _offending_line(text: str, error: str) -> str:
    """The exposition line the parser's message quotes, if it quotes one."""
    for line in text.splitlines():
        if line and line in error:
            return line[:300]
    return ""


def check_exposition(text: str, openmetrics: bool) -> list[Failure]:
    """Whether prometheus_client's parser for the format takes the exposition."""
    fmt = "openmetrics" if openmetrics else "text"
    error = _first_error(text, fmt)
    if error is None:
        return []
    if openmetrics and not text.endswith("# EOF\n"):
        signature = f"scrape {fmt}: no # EOF at the end"
    else:
        signature = f"scrape {fmt} parser: {normalize(error)}"
    line = _offending_line(text, error)
    return [Failure(signature, f"{error[:500]}" + (f"\nline: {line}" if line else ""))]


# promtool's style lints on a metric's own name (client_golang's promlint) judge
# the name the engine chose, not what the sidecar did with it: allowed for OTLP
# metrics, never for the sidecar's own families. Lints on what the sidecar writes
# (le/quantile labels, missing _total, missing HELP) and parse errors always fail.
NAME_STYLE_LINTS = (
    "metric names should be written in 'snake_case' not 'camelCase'",
    "label names should be written in 'snake_case' not 'camelCase'",
    "metric names should not contain abbreviated units",
    "metric names should not contain ':'",
    # Gauges named *.count by OpenTelemetry's semantic conventions (process.thread.count):
    # served as Prometheus's OTLP translation names them (docs/metrics.md).
    'non-histogram and non-summary metrics should not have "_count" suffix',
)
_NAME_STYLE = re.compile(
    r"^(?P<name>\S+) (?:"
    + "|".join(re.escape(lint) for lint in NAME_STYLE_LINTS)
    + r"|metric name should not include type '\w+'|use base unit \S+ instead of \S+)$"
)
OWN_PREFIXES = (
    "node_",
    "engine_",
    "tickscope_",
    "traces_span_metrics_",
    "trading_",
    "exchange_",
    "process_",
    "python_",
)


def name_style_only(finding: str) -> bool:
    match = _NAME_STYLE.match(finding)
    return match is not None and not match["name"].startswith(OWN_PREFIXES)


def promtool_failures(findings: list[str], returncode: int) -> list[Failure]:
    """Failures from `promtool check metrics` findings (the allowed one already
    filtered out by helpers.binaries.promtool_check_metrics)."""
    out = []
    for finding in findings:
        if name_style_only(finding):
            continue
        # "<name> <lint message>" or "error while linting: ...": the name varies.
        head, _, rest = finding.partition(" ")
        message = finding if head.endswith(":") or not rest else rest
        out.append(Failure(f"promtool: {normalize(message)}", finding[:500]))
    if returncode not in (0, 3) and not out:
        out.append(Failure(f"promtool: exit {returncode}", ""))
    return out
