"""The committed dashboards, checked without Grafana: generated from the code, every
panel wired to the datasource variable with a unit and a description, no overlaps,
every PromQL expression parsed by promtool, every metric documented, every alert's
dashboard_url naming a panel that queries the alert's metrics, thresholds equal to
the rules'. (tests/test_dashboards_schema.py checks Grafana's types,
tests/test_dashboards_live.py the queries against live data.)"""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import urllib.parse
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers.binaries import require_binary
from helpers.grafana_vars import QueryOptions, builtins, dashboard_variables, interpolate
from helpers.sidecar import ROOT
from tickscope_dashboards import catalog, generate, thresholds
from tickscope_dashboards.thresholds import Step

DASHBOARDS = ROOT / "dashboards"
FILES = sorted(DASHBOARDS.glob("*.json"))
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
UIDS = ("tickscope-host", "tickscope-trading", "tickscope-sidecar")
# Series Prometheus makes itself.
PROMETHEUS_SERIES = {"ALERTS", "up"}


def load(path: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(path.read_text())
    return document


def all_items(document: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows and panels, a collapsed row's panels included."""
    items: list[dict[str, Any]] = []
    for item in document["panels"]:
        items.append(item)
        items.extend(item.get("panels", []))
    return items


def panels(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in all_items(document) if item["type"] != "row"]


def expressions(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every query the dashboard sends: targets, annotations, variables."""
    found = [
        (f"panel {p['title']!r} {t['refId']}", t["expr"])
        for p in panels(document)
        for t in p["targets"]
    ]
    found += [
        (f"annotation {a['name']!r}", a["target"]["expr"]) for a in document["annotations"]["list"]
    ]
    for variable in document["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((.*), \w+\)", variable["query"]["query"])
            assert match, f"variable {variable['name']}: {variable['query']!r}"
            found.append((f"variable {variable['name']!r}", match.group(1)))
    return found


def grafana_interpolated(document: dict[str, Any], expr: str) -> str:
    """expr as Grafana sends it for the last hour on a 1,000-pixel panel, 15 s scrapes."""
    built = builtins(QueryOptions(range_ms=3_600_000, max_data_points=1000, scrape_interval="15s"))
    return interpolate(expr, dashboard_variables(document), built.variables)


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (each selector is written name{...})."""
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    return set(re.findall(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\{", without_strings))


def documented() -> tuple[set[str], tuple[str, ...]]:
    """Names docs/metrics.md lists (brace groups expanded; histograms' series too),
    and its `prefix_*` wildcards."""
    names: set[str] = set()
    prefixes: list[str] = []
    for token in re.findall(
        r"`([a-zA-Z][a-zA-Z0-9_{},*]*)`", (ROOT / "docs" / "metrics.md").read_text()
    ):
        if token.endswith("*"):
            prefixes.append(token[:-1])
            continue
        parts = re.split(r"\{([^}]*)\}", token)
        choices = [[p] if i % 2 == 0 else p.split(",") for i, p in enumerate(parts)]
        for combination in itertools.product(*choices):
            name = "".join(combination)
            names.update({name, f"{name}_bucket", f"{name}_sum", f"{name}_count"})
    return names, tuple(prefixes)


def test_generated_files_are_current() -> None:
    stale = generate.run(check=True)
    assert stale == [], (
        f"stale (run `make dashboards`): {[str(p.relative_to(ROOT)) for p in stale]}"
    )


def test_three_dashboards_linked_and_tagged() -> None:
    assert [p.name for p in FILES] == sorted(f"{uid}.json" for uid in UIDS)
    for path in FILES:
        document = load(path)
        assert document["uid"] == path.stem
        assert document["schemaVersion"] == 41
        assert "tickscope" in document["tags"]
        assert document["links"] == [
            {
                "title": "tickscope",
                "type": "dashboards",
                "icon": "",
                "tooltip": "",
                "tags": ["tickscope"],
                "asDropdown": True,
                "targetBlank": False,
                "includeVars": True,
                "keepTime": True,
            }
        ]
        variables = {v["name"]: v for v in document["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        for name in ("job", "instance"):
            assert variables[name]["includeAll"] is True
            assert variables[name]["multi"] is True
            assert variables[name]["allValue"] == ".*"
            assert variables[name]["datasource"] == DATASOURCE


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_every_panel_is_complete(path: Path) -> None:
    document = load(path)
    items = all_items(document)
    ids = [item["id"] for item in items]
    assert ids == list(range(1, len(items) + 1))
    titles = [p["title"] for p in panels(document)]
    assert len(titles) == len(set(titles)), "panel titles repeat"
    for panel in panels(document):
        where = f"{path.name}: panel {panel['title']!r}"
        assert panel["datasource"] == DATASOURCE, where
        assert panel["targets"], where
        assert [t["refId"] for t in panel["targets"]] == list(
            "ABCDEFGHIJ"[: len(panel["targets"])]
        ), where
        assert all(t["datasource"] == DATASOURCE for t in panel["targets"]), where
        unit = panel["fieldConfig"]["defaults"].get("unit")
        assert isinstance(unit, str) and unit, f"{where}: no unit"
        assert len(panel.get("description", "")) >= 20, f"{where}: no description"
        assert panel["type"] in {"timeseries", "stat", "table", "status-history"}, where
    for row in (item for item in items if item["type"] == "row"):
        assert row["title"], path.name


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_no_two_panels_overlap(path: Path) -> None:
    document = load(path)
    boxes = []
    for item in document["panels"]:
        g = item["gridPos"]
        assert g["x"] in range(24) and g["x"] + g["w"] <= 24, (
            f"{item['title']!r} leaves the 24 columns"
        )
        boxes.append((item["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for a, b in itertools.combinations(boxes, 2):
        overlap = a[1] < b[3] and b[1] < a[3] and a[2] < b[4] and b[2] < a[4]
        assert not overlap, f"{path.name}: {a[0]!r} and {b[0]!r} overlap"


def test_every_expression_parses(tmp_path: Path) -> None:
    """promtool parses each expression (as a recording rule), as Grafana would send it."""
    promtool = require_binary("promtool")
    rules = []
    where_of: list[str] = []
    for path in FILES:
        document = load(path)
        for where, expr in expressions(document):
            rules.append(
                {
                    "record": f"dashboard:check:{len(rules)}",
                    "expr": grafana_interpolated(document, expr),
                }
            )
            where_of.append(f"{path.name} {where}")
    assert len(rules) > 100
    rule_file = tmp_path / "dashboards.rules.yml"
    rule_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(rule_file)], capture_output=True, text=True, timeout=60
    )
    # promtool names the failing rule by its index in the group.
    failing = [
        where_of[int(i)]
        for i in re.findall(r"dashboard:check:(\d+)", result.stderr + result.stdout)
    ]
    assert result.returncode == 0, f"{failing}\n{result.stdout}{result.stderr}"
    assert f"SUCCESS: {len(rules)} rules found" in result.stdout


def test_every_metric_is_documented() -> None:
    names, prefixes = documented()
    used: set[str] = set()
    for path in FILES:
        for _, expr in expressions(load(path)):
            used |= metric_names(expr)
    undocumented = {n for n in used - names - PROMETHEUS_SERIES if not n.startswith(prefixes)}
    assert undocumented == set(), "metrics the dashboards query that docs/metrics.md does not list"
    assert len(used) > 60


def test_metric_names_and_documented_parse_as_expected() -> None:
    assert metric_names('sum by (x) (rate(a_total{job=~"$job", l="b{c}"}[5m])) / b{}') == {
        "a_total",
        "b",
    }
    names, prefixes = documented()
    assert {"node_network_receive_errs_total", "node_network_transmit_drop_total"} <= names
    assert "traces_span_metrics_duration_seconds_bucket" in names
    assert "process_" in prefixes


@pytest.mark.parametrize("alert", sorted(thresholds.alert_rules()))
def test_alert_links_to_a_panel_with_its_metrics(alert: str) -> None:
    rule = thresholds.alert_rules()[alert]
    url = urllib.parse.urlsplit(rule["annotations"]["dashboard_url"])
    match = re.fullmatch(r"/d/([a-z-]+)", url.path)
    assert match, url
    panel_id = int(urllib.parse.parse_qs(url.query)["viewPanel"][0])
    document = load(DASHBOARDS / f"{match.group(1)}.json")
    (panel,) = [p for p in panels(document) if p["id"] == panel_id]
    queried = set().union(*(metric_names(t["expr"]) for t in panel["targets"]))
    alert_metrics = rule_metrics(rule["expr"])
    assert alert_metrics, alert
    assert queried & alert_metrics, (
        f"{alert} links to {panel['title']!r}, which queries {queried}, not {alert_metrics}"
    )


def rule_metrics(expr: str) -> set[str]:
    """Metric names in a rule's expression: documented names it mentions, or matches
    with a `{__name__=~"..."}` selector."""
    names, _ = documented()
    names |= PROMETHEUS_SERIES
    code = re.sub(r"#[^\n]*", "", expr)
    # Identifiers, less label names (those before a matcher: `job="..."`).
    tokens = re.findall(
        r"[a-zA-Z_:][a-zA-Z0-9_:]*(?!\s*(?:=~|!=|!~|=(?!=)))\b", re.sub(r'"[^"]*"', '""', code)
    )
    found = set(tokens) & names
    for pattern in re.findall(r'__name__=~"([^"]*)"', code):
        found |= {n for n in names if re.fullmatch(pattern, n)}
    return found


def test_rule_metrics() -> None:
    assert rule_metrics(
        'sum(rate({__name__=~"tickscope_forward_(failed|dropped)_spans_total"}[5m])) > 0'
    ) == {
        "tickscope_forward_failed_spans_total",
        "tickscope_forward_dropped_spans_total",
    }
    assert rule_metrics('up{job="tickscope"} == 0 # node_load1') == {"up"}


THRESHOLD_CASES = [
    ("a / b > 0.90", ">", 0.9),
    ("node_memory_MemAvailable_bytes / node_memory_MemTotal_bytes < 0.15", "<", 0.15),
    ("(1 - a / b) > 0.85\n and node_filesystem_readonly == 0", ">", 0.85),
    ("x\n# > 0.5 in a comment\n > 2", ">", 2.0),
    ("deriv(m[1h]) * 3600 > 16 * 1024 * 1024\n and y > 0", ">", 0.0),
]


@pytest.mark.parametrize(("expr", "op", "value"), THRESHOLD_CASES)
def test_threshold_of_an_expression(
    expr: str, op: str, value: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    rules = {"A": {"expr": expr, "labels": {"severity": "warning"}, "file": "t.rules.yml"}}
    monkeypatch.setattr(thresholds, "alert_rules", lambda: rules)
    found = thresholds.threshold("A")
    assert (found.op, found.value, found.colour) == (op, value, "orange")


def test_threshold_steps() -> None:
    assert thresholds.steps("HostMemoryLow", "HostMemoryCritical") == (
        Step(None, "red"),
        Step(0.05, "orange"),
        Step(0.15, "green"),
    )
    assert thresholds.steps("HostFilesystemAlmostFull", "HostFilesystemFull") == (
        Step(None, "green"),
        Step(0.85, "orange"),
        Step(0.95, "red"),
    )
    with pytest.raises(ValueError, match="mix"):
        thresholds.steps("HostMemoryLow", "HostCpuBusy")


def test_drawn_thresholds_equal_the_rules() -> None:
    """Every graph that shows an alert with a `> N`/`< N` condition on its own quantity
    draws N (exactly the rule's number) in the committed JSON."""
    checked = 0
    for dashboard in catalog.DASHBOARDS:
        document = load(DASHBOARDS / f"{dashboard.uid}.json")
        by_title = {p["title"]: p for p in panels(document)}
        for panel in dashboard.panels():
            if not panel.steps:
                continue
            drawn = [
                s["value"]
                for s in by_title[panel.title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
            ]
            for alert in panel.alerts:
                assert thresholds.threshold(alert).value in drawn, (
                    dashboard.uid,
                    panel.title,
                    alert,
                )
                checked += 1
    assert checked >= 12


def test_empty_panels_name_a_known_fault() -> None:
    from tickscope_dashboards.common import FAULTS

    empty = catalog.healthy_empty()
    assert set(empty) == set(UIDS)
    for uid, titles in empty.items():
        assert set(titles.values()) <= set(FAULTS), uid
        assert "Firing alerts" in titles, uid
