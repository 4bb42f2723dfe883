"""What a dashboard is made of, independent of Grafana's JSON: the catalog the
renderer, the docs table, the alert links and the tests all read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tickscope_dashboards.thresholds import Step

PanelKind = Literal["timeseries", "stat", "table", "status-history"]


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""
    # Tables and stats of "now" ask for one instant value, not a range.
    instant: bool = False
    # Latency panels: Grafana fetches exemplars (trace_id) beside the series.
    exemplar: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]
    kind: PanelKind = "timeseries"
    width: int = 12
    height: int = 8
    steps: tuple[Step, ...] = ()
    # The alerts whose condition this panel shows: their `dashboard_url` points here.
    alerts: tuple[str, ...] = ()
    # None: returns data on a healthy system. Otherwise the fault that makes it show
    # something (the live-data test injects it; docs/dashboards.md says so).
    healthy_empty: str | None = None
    stacked: bool = False
    min: float | None = None
    max: float | None = None
    # Stat panels: value → text (engine up/down).
    value_text: tuple[tuple[str, str, str], ...] = ()  # (value, text, colour)
    # Tables: column renames, and units per renamed column.
    columns: tuple[tuple[str, str], ...] = ()
    column_units: tuple[tuple[str, str], ...] = ()
    hidden_columns: tuple[str, ...] = ("Time",)
    sort_by: str | None = None


@dataclass(frozen=True)
class Row:
    title: str
    panels: tuple[Panel, ...]
    collapsed: bool = False


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    description: str
    variables: tuple[str, ...]
    rows: tuple[Row, ...]
    # ALERTS of these components are drawn as annotations on every graph.
    alert_components: tuple[str, ...] = ()
    tags: tuple[str, ...] = field(default=("tickscope",))

    def panels(self) -> list[Panel]:
        return [p for row in self.rows for p in row.panels]
