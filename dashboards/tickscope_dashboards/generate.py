"""Write (or, with check=True, compare) everything generated from the dashboards' code:
dashboards/*.json, the `dashboard_url` annotation of every alert rule, and the panel
tables of docs/dashboards.md."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

from tickscope_dashboards import catalog, render
from tickscope_dashboards.common import FAULTS
from tickscope_dashboards.thresholds import RULES_DIR

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS_DIR = ROOT / "dashboards"
DOC = ROOT / "docs" / "dashboards.md"
BEGIN = "<!-- BEGIN GENERATED: make dashboards -->"
END = "<!-- END GENERATED -->"

# `- alert: X` in a rule file, `alertname: X` in a promtool test's alert_rule_test.
_ALERT = re.compile(r"^(\s*)(?:- alert|alertname):\s*(\S+)\s*$")
_RUNBOOK = re.compile(r"^(\s*)runbook_url:")
_DASHBOARD_URL = re.compile(r"^\s*dashboard_url:")


def dashboard_files() -> dict[Path, str]:
    return {
        DASHBOARDS_DIR / catalog.file_name(d.uid): render.to_json(catalog.rendered(d.uid))
        for d in catalog.DASHBOARDS
    }


def with_alert_links(text: str, links: dict[str, str]) -> str:
    """The rule file's text with a `dashboard_url:` line after each alert's
    `runbook_url:` (an existing one replaced), comments and layout kept."""
    out: list[str] = []
    alert: str | None = None
    for line in text.splitlines(keepends=True):
        if _DASHBOARD_URL.match(line):
            continue
        match = _ALERT.match(line)
        if match:
            alert = match.group(2)
        out.append(line)
        runbook = _RUNBOOK.match(line)
        if runbook and alert is not None:
            if alert not in links:
                raise KeyError(f"alert {alert} is shown on no dashboard panel (spec.Panel.alerts)")
            out.append(f"{runbook.group(1)}dashboard_url: {links[alert]}\n")
    return "".join(out)


def rule_files() -> dict[Path, str]:
    """The rules, and their promtool tests' expected annotations."""
    links = catalog.alert_links()
    paths = [*sorted(RULES_DIR.glob("*.rules.yml")), *sorted(RULES_DIR.glob("tests/*.test.yml"))]
    return {path: with_alert_links(path.read_text(), links) for path in paths}


def docs_tables() -> str:
    parts: list[str] = []
    empty = catalog.healthy_empty()
    for dashboard in catalog.DASHBOARDS:
        panels = dashboard.panels()
        queries = sum(len(p.queries) for p in panels)
        parts.append(
            f"### {dashboard.title}\n\n"
            f"`dashboards/{catalog.file_name(dashboard.uid)}`, uid `{dashboard.uid}`: "
            f"{len(panels)} panels, {queries} queries, {len(dashboard.rows)} rows. "
            f"{dashboard.description}\n\n"
            "| row | panel | what it answers | unit | empty on a healthy system |\n|---|---|---|---|---|\n"
        )
        ids = catalog.panel_ids(dashboard.uid)
        for row in dashboard.rows:
            for panel in row.panels:
                fault = empty[dashboard.uid].get(panel.title)
                why = f"yes, until {FAULTS[fault]}" if fault else ""
                parts.append(
                    f"| {row.title} | [{panel.title}]({catalog.dashboard_url(dashboard.uid)}?viewPanel={ids[panel.title]}) "
                    f"| {panel.description.replace('|', '/')} | `{panel.unit}` | {why} |\n"
                )
        parts.append("\n")
    parts.append(
        "### Alerts and the panel each links to (`dashboard_url`)\n\n| alert | panel |\n|---|---|\n"
    )
    for alert, (dashboard, panel) in sorted(catalog.alert_panels().items()):
        parts.append(
            f"| {alert} | {dashboard.title} → {panel.title} (`{catalog.dashboard_url(dashboard.uid, panel.title)}`) |\n"
        )
    return "".join(parts)


def doc_file() -> dict[Path, str]:
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return {DOC: f"{head}{BEGIN}\n{docs_tables()}{END}{tail}"}


GENERATED: tuple[Callable[[], dict[Path, str]], ...] = (dashboard_files, rule_files, doc_file)


def run(check: bool) -> list[Path]:
    """Write every generated file; with check, write nothing and return the files
    that differ from what the code generates."""
    stale: list[Path] = []
    expected: dict[Path, str] = {}
    for produce in GENERATED:
        expected.update(produce())
    known = {DASHBOARDS_DIR / catalog.file_name(d.uid) for d in catalog.DASHBOARDS}
    strays = [p for p in DASHBOARDS_DIR.glob("*.json") if p not in known]
    for path, content in expected.items():
        current = path.read_text() if path.exists() else None
        if current != content:
            stale.append(path)
            if not check:
                path.write_text(content)
    if strays:
        stale.extend(strays)
        if not check:
            for path in strays:
                path.unlink()
    return stale
