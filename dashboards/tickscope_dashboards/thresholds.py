"""Threshold steps taken from the alert rules, so a dashboard's red line is where the
page fires: alert-rules/*.rules.yml is read, never copied.

Each rule that a panel draws must end its condition in one comparison with a number
(`... > 0.90`, `... < 0.15`); the first such comparison of the expression is the
threshold (later ones are guards such as `and node_filesystem_readonly == 0`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

RULES_DIR = Path(__file__).resolve().parents[2] / "alert-rules"

# `> 0.90` but not `>= 0`, `== 0`, `> 16 * 1024` (a product is not a threshold a panel can draw).
_COMPARISON = re.compile(r"(?<![<>=!])([<>])\s*(\d+(?:\.\d+)?)(?!\s*[*/.\d])")
_COMMENT = re.compile(r"#[^\n]*")

SEVERITY_COLOURS = {"warning": "orange", "critical": "red"}


@dataclass(frozen=True)
class AlertThreshold:
    alert: str
    op: str  # ">" fires above value, "<" below it
    value: float
    severity: str
    file: str

    @property
    def colour(self) -> str:
        return SEVERITY_COLOURS[self.severity]


@dataclass(frozen=True)
class Step:
    """A Grafana threshold step: from `value` up (None: from -Infinity), `colour`."""

    value: float | None
    colour: str


@cache
def alert_rules(directory: Path = RULES_DIR) -> dict[str, dict[str, Any]]:
    """Every alerting rule by name, with the file it is in."""
    rules: dict[str, dict[str, Any]] = {}
    for path in sorted(directory.glob("*.rules.yml")):
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "alert" in rule:
                    rules[rule["alert"]] = {**rule, "file": path.name}
    return rules


def threshold(alert: str) -> AlertThreshold:
    rules = alert_rules()
    if alert not in rules:
        raise KeyError(f"no alert rule {alert!r} in {RULES_DIR}")
    rule = rules[alert]
    match = _COMPARISON.search(_COMMENT.sub("", rule["expr"]))
    if match is None:
        raise ValueError(f"alert {alert}: no `> N` or `< N` in its expression: {rule['expr']!r}")
    return AlertThreshold(
        alert=alert,
        op=match.group(1),
        value=float(match.group(2)),
        severity=rule["labels"]["severity"],
        file=rule["file"],
    )


def steps(*alerts: str) -> tuple[Step, ...]:
    """Grafana threshold steps for alerts on the same quantity, all `>` or all `<`.

    `>`: green below the lowest threshold, then each alert's severity colour from its
    value up. `<`: the most severe colour below the lowest threshold, each next colour
    from there up, green from the highest.
    """
    found = sorted((threshold(a) for a in alerts), key=lambda t: t.value)
    ops = {t.op for t in found}
    if len(ops) != 1:
        raise ValueError(f"alerts {alerts} mix `>` and `<`: one panel cannot draw both")
    if ops == {">"}:
        return (Step(None, "green"), *(Step(t.value, t.colour) for t in found))
    colours = [t.colour for t in found[1:]] + ["green"]
    return (
        Step(None, found[0].colour),
        *(Step(t.value, c) for t, c in zip(found, colours, strict=True)),
    )
