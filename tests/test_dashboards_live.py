"""Every panel of the committed dashboards shows data on the live demo.

The demo (exchange simulator, demo engine through the shim, sidecar) runs with a
real Prometheus scraping the sidecar every second (tests/helpers/demo_stack.py).
Every target expression of dashboards/*.json (rows' nested panels included) is
interpolated as Grafana does for a Prometheus datasource with a 1 s scrape interval
over the last 5 minutes, every filter at All (tests/helpers/grafana_vars.py), and
run against Prometheus's HTTP API, both as an instant and as a range query:

1. Healthy, after ~45 s of data: each must parse, and return at least one series
   (with the query type its panel uses: instant for instant-only targets, else
   range) unless its panel is one the catalog lists as empty on a healthy system
   (tickscope_dashboards.catalog.healthy_empty). The latency panels' exemplar
   queries find exemplars carrying a trace_id.
2. Every fault of the catalog is injected, one after the other (the simulator's
   rate limits, 5xx and rejected orders, bad OTLP, overflow, a dead upstream, the
   engine stopped, alerts firing): now every expression returns a series.

The summary (counts, and which fault filled which panel) is printed at the end.
"""

from __future__ import annotations

import importlib
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from helpers.binaries import require_binary
from helpers.demo_stack import FAULTS, DemoStack, QueryError, host_sysfs
from helpers.grafana_vars import PanelQuery, builtins, panel_queries, relative_range_ms
from helpers.grafana_vars import QueryOptions as GrafanaQueryOptions
from helpers.sidecar import ROOT

pytestmark = pytest.mark.system

DASHBOARDS = ROOT / "dashboards"
TIME_RANGE = "now-5m"  # the dashboards' time picker for this test
SCRAPE_INTERVAL = "1s"  # the datasource's scrape interval (jsonData.timeInterval)
HEALTHY_SECONDS = 45.0
FILL_TIMEOUT = 15.0  # per fault, for its panels to show it
FINAL_TIMEOUT = 20.0
FAULT_KEYS = frozenset(FAULTS) | {"sensors"}


@dataclass(frozen=True)
class Query:
    uid: str
    panel: PanelQuery

    @property
    def title(self) -> str:
        return self.panel.panel_title

    def where(self) -> str:
        return f"{self.uid} / {self.title!r} / {self.panel.ref_id}: {self.panel.expr}"


@dataclass
class Outcome:
    instant: int | None = None  # series, None if the query failed
    range: int | None = None
    error: str | None = None

    def shows(self, query: Query) -> bool:
        """Whether the panel shows data: the query type it runs returned series."""
        counts = [self.instant if query.panel.instant else None]
        counts.append(self.range if query.panel.range else None)
        return any(c for c in counts)


@dataclass
class State:
    dashboards: dict[str, dict[str, Any]]
    healthy_empty: dict[str, dict[str, str]]
    queries: list[Query]
    phase1: dict[Query, Outcome] = field(default_factory=dict)
    filled_by: dict[Query, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    lines: list[str] = field(default_factory=list)

    def say(self, line: str) -> None:
        print(line)
        self.lines.append(line)


def load_dashboards() -> dict[str, dict[str, Any]]:
    paths = sorted(DASHBOARDS.glob("*.json"))
    if not paths:
        pytest.fail(f"no dashboards in {DASHBOARDS}: the live test needs dashboards/*.json")
    dashboards: dict[str, dict[str, Any]] = {}
    for path in paths:
        dashboard = json.loads(path.read_text())
        dashboards[dashboard["uid"]] = dashboard
    return dashboards


def load_healthy_empty() -> dict[str, dict[str, str]]:
    if str(DASHBOARDS) not in sys.path:
        sys.path.insert(0, str(DASHBOARDS))
    catalog = importlib.import_module("tickscope_dashboards.catalog")
    result: dict[str, dict[str, str]] = catalog.healthy_empty()
    return result


@pytest.fixture(scope="module")
def state(request: pytest.FixtureRequest) -> Iterator[State]:
    dashboards = load_dashboards()
    range_ms = relative_range_ms(TIME_RANGE)
    queries = [
        Query(uid, q)
        for uid, dashboard in dashboards.items()
        for q in panel_queries(dashboard, range_ms, SCRAPE_INTERVAL)
    ]
    s = State(dashboards, load_healthy_empty(), queries)
    started = time.monotonic()
    yield s
    if "stack stop" in s.timings:
        s.say(
            f"stack stopped in {s.timings['stack stop']:.1f}s; "
            f"module wall time {time.monotonic() - started:.1f}s"
        )
    # Also on the terminal when output is captured (without -s or -rA).
    reporter = request.config.pluginmanager.getplugin("terminalreporter")
    capture = request.config.pluginmanager.getplugin("capturemanager")
    if reporter is not None and capture is not None and s.lines:
        with capture.global_and_fixture_disabled():
            reporter.write_line("")
            for line in s.lines:
                reporter.write_line(line)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, state: State) -> Iterator[DemoStack]:
    binary = require_binary("prometheus")
    started = time.monotonic()
    with DemoStack(tmp_path_factory.mktemp("live"), prometheus_binary=binary) as s:
        s.wait_ready()
        state.timings["stack ready"] = time.monotonic() - started
        yield s
        stopping = time.monotonic()
    state.timings["stack stop"] = time.monotonic() - stopping


def run(stack: DemoStack, query: Query) -> Outcome:
    """The query as an instant query (now) and as a range query over TIME_RANGE."""
    end = time.time()
    start = end - relative_range_ms(TIME_RANGE) / 1000
    step = query.panel.step_s
    outcome = Outcome()
    try:
        outcome.instant = len(stack.prometheus.instant(query.panel.expr, end))
        # Aligned to the step, as Grafana's Prometheus datasource aligns its range.
        outcome.range = len(
            stack.prometheus.range(
                query.panel.expr, start // step * step, -(-end // step) * step, step
            )
        )
    except QueryError as e:
        outcome.error = str(e)
    return outcome


def panels(state: State) -> set[tuple[str, str]]:
    return {(q.uid, q.title) for q in state.queries}


def test_every_target_interpolates_and_the_catalog_names_real_panels(state: State) -> None:
    """No stack needed: the expressions interpolate (the fixture raises otherwise),
    and every panel healthy_empty names exists, with a known fault key."""
    known = panels(state)
    problems = [
        f"healthy_empty[{uid!r}][{title!r}]: no such panel"
        for uid, entries in state.healthy_empty.items()
        for title in entries
        if (uid, title) not in known
    ]
    problems += [
        f"healthy_empty[{uid!r}][{title!r}] = {fault!r}: not a fault key ({sorted(FAULT_KEYS)})"
        for uid, entries in state.healthy_empty.items()
        for title, fault in entries.items()
        if fault not in FAULT_KEYS
    ]
    assert state.queries
    assert not problems, "\n".join(problems)


def test_phase1_healthy_every_expression_parses_and_shows_data(
    stack: DemoStack, state: State
) -> None:
    started = time.monotonic()
    stack.wait_for_data(HEALTHY_SECONDS)
    state.timings["phase 1 wait"] = time.monotonic() - started
    errors: list[str] = []
    empty: list[str] = []
    for query in state.queries:
        outcome = run(stack, query)
        state.phase1[query] = outcome
        if outcome.error is not None:
            errors.append(f"{query.where()}\n    Prometheus: {outcome.error}")
        elif not outcome.shows(query) and query.title not in state.healthy_empty.get(query.uid, {}):
            empty.append(f"{query.where()}\n    no series on a healthy system")
    state.timings["phase 1 queries"] = time.monotonic() - started - state.timings["phase 1 wait"]

    n_panels = len(panels(state))
    shown = sum(o.shows(q) for q, o in state.phase1.items())
    state.say(
        f"dashboards live: {len(state.dashboards)} dashboards, {n_panels} panels, "
        f"{len(state.queries)} queries (each instant and range; range {TIME_RANGE}, "
        f"scrape interval {SCRAPE_INTERVAL}, "
        f"$__rate_interval {rate_interval()}; host.sysfs {host_sysfs()})"
    )
    state.say(
        f"phase 1 (healthy, {HEALTHY_SECONDS:.0f} s of data): "
        f"{sum(o.error is None for o in state.phase1.values())} parse, {shown} non-empty"
    )
    needless = sorted(
        f"{uid}/{title}"
        for uid, entries in state.healthy_empty.items()
        for title in entries
        if all(o.shows(q) for q, o in state.phase1.items() if (q.uid, q.title) == (uid, title))
    )
    if needless:
        state.say("  in healthy_empty, yet every query of it showed data: " + "; ".join(needless))
    report = []
    if errors:
        report += [f"{len(errors)} expression(s) Prometheus refused:", *errors]
    if empty:
        report += [f"{len(empty)} expression(s) empty, their panel not in healthy_empty:", *empty]
    assert not report, "\n".join(report)


def rate_interval() -> str:
    """$__rate_interval of a full-width panel over TIME_RANGE."""
    options = GrafanaQueryOptions(relative_range_ms(TIME_RANGE), 1920, SCRAPE_INTERVAL)
    return builtins(options).variables["__rate_interval"]


def test_phase1_latency_exemplars_carry_trace_ids(stack: DemoStack, state: State) -> None:
    stack.wait_for_data(HEALTHY_SECONDS)
    with_exemplars = [q for q in state.queries if q.panel.exemplar]
    assert with_exemplars, "no target asks for exemplars"
    missing: list[str] = []
    end = time.time()
    for query in with_exemplars:
        try:
            found = stack.prometheus.exemplars(query.panel.expr, stack.started_at - 60, end)
        except QueryError as e:
            missing.append(f"{query.where()}\n    Prometheus: {e}")
            continue
        traced = [e for series in found for e in series["exemplars"] if e["labels"].get("trace_id")]
        if not traced:
            missing.append(f"{query.where()}\n    no exemplar with a trace_id: {found!r:.300}")
    state.say(
        f"exemplars: {len(with_exemplars) - len(missing)} of {len(with_exemplars)} exemplar "
        "queries return exemplars carrying a trace_id"
    )
    assert not missing, "\n".join(missing)


def test_phase2_faults_fill_every_panel(stack: DemoStack, state: State) -> None:
    stack.wait_ready()
    started = time.monotonic()
    pending = [q for q in state.queries if not state.phase1.get(q, Outcome()).shows(q)]
    for q in state.queries:
        if q not in pending:
            state.filled_by[q] = "healthy"
    declared = {
        (uid, title): fault
        for uid, entries in state.healthy_empty.items()
        for title, fault in entries.items()
    }
    for fault in FAULTS:
        stack.inject(fault)
        # Its own panels get a few seconds (rates over $__rate_interval); the others
        # are looked at once.
        deadline = time.monotonic() + FILL_TIMEOUT
        while pending:
            for q in list(pending):
                if run(stack, q).shows(q):
                    state.filled_by[q] = fault
                    pending.remove(q)
            waiting = [q for q in pending if declared.get((q.uid, q.title)) == fault]
            if not waiting or time.monotonic() > deadline:
                break
            time.sleep(0.5)
    state.timings["phase 2 faults"] = time.monotonic() - started

    # Then every expression once more, all of them now showing data.
    final_started = time.monotonic()
    outcomes = {q: run(stack, q) for q in state.queries}
    deadline = time.monotonic() + FINAL_TIMEOUT
    while time.monotonic() < deadline and any(
        o.error is None and not o.shows(q) for q, o in outcomes.items()
    ):
        time.sleep(1.0)
        for q, o in list(outcomes.items()):
            if o.error is None and not o.shows(q):
                outcomes[q] = run(stack, q)
    state.timings["phase 2 final"] = time.monotonic() - final_started

    errors = [f"{q.where()}\n    Prometheus: {o.error}" for q, o in outcomes.items() if o.error]
    empty = [
        f"{q.where()}\n    no series after every fault (declared fault: "
        f"{declared.get((q.uid, q.title))})"
        for q, o in outcomes.items()
        if o.error is None and not o.shows(q)
    ]
    shown = sum(o.shows(q) for q, o in outcomes.items())
    state.say(
        f"phase 2 (faults {', '.join(FAULTS)}; firing: {', '.join(stack.firing_alerts())}): "
        f"{shown} of {len(state.queries)} non-empty"
    )
    by_fault: dict[str, list[str]] = {}
    for q, fault in state.filled_by.items():
        if fault == "healthy":
            continue
        label = f"{q.uid}/{q.title} [{q.panel.ref_id}]"
        expected = declared.get((q.uid, q.title))
        if expected != fault:
            label += f" (catalog: {expected})"
        by_fault.setdefault(fault, []).append(label)
    for fault in FAULTS:
        if fault in by_fault:
            state.say(f"  after {fault}: " + "; ".join(by_fault[fault]))
    unfilled = sorted({f"{q.uid}/{q.title}" for q in pending})
    if unfilled:
        state.say("  filled by no single fault: " + "; ".join(unfilled))
    state.say(
        "wall times: "
        + ", ".join(f"{k} {v:.1f}s" for k, v in state.timings.items() if not k.endswith("stop"))
    )
    report = []
    if errors:
        report += [f"{len(errors)} expression(s) Prometheus refused:", *errors]
    if empty:
        report += [f"{len(empty)} expression(s) still empty after every fault:", *empty]
    assert not report, "\n".join(report)
