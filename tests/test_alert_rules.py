"""The alert rules in alert-rules/: promtool and amtool accept them, every alert is
complete (labels for routing, annotations, a runbook section that exists, promtool
cases that fire it and that keep it silent), and the expressions use the metric
contract's names only."""

from __future__ import annotations

import re
import subprocess
from typing import Any

import pytest
import yaml
from alerts_table import rules, table

from helpers.binaries import require_binary
from helpers.contract import CONTRACT_SERIES, documented_series
from helpers.sidecar import ROOT
from tickscope_dashboards.catalog import alert_links

RULES_DIR = ROOT / "alert-rules"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((RULES_DIR / "tests").glob("*.test.yml"))
ALERTMANAGER_EXAMPLE = RULES_DIR / "alertmanager.example.yml"
RUNBOOKS = ROOT / "docs" / "runbooks.md"

SEVERITIES = {"warning", "critical"}
COMPONENTS = {"host", "engine", "exchange", "sidecar"}


# What a rule may select: the contract, everything docs/metrics.md documents, and
# the scrape's own `up`.
QUERYABLE = CONTRACT_SERIES | documented_series() | {"up"}
METRIC_PREFIXES = ("node_", "engine_", "exchange_", "trading_", "traces_", "tickscope_", "up")


def alerts() -> list[dict[str, Any]]:
    return rules()


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=RULES_DIR)


def test_rule_files_exist() -> None:
    assert [p.name for p in RULE_FILES] == [
        "account.rules.yml",
        "engine.rules.yml",
        "exchange.rules.yml",
        "host.rules.yml",
        "marketdata.rules.yml",
        "sidecar.rules.yml",
    ]
    assert len(alerts()) >= 20


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool")
    result = run(promtool, "check", "rules", *(p.name for p in RULE_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    found = sum(int(n) for n in re.findall(r"SUCCESS: (\d+) rules found", result.stdout))
    assert found == len(alerts())


def test_promtool_unit_tests() -> None:
    promtool = require_binary("promtool")
    result = run(promtool, "test", "rules", *(f"tests/{p.name}" for p in TEST_FILES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TEST_FILES) == len(RULE_FILES)


def test_every_alert_has_cases_that_fire_it_and_keep_it_silent() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    for path in TEST_FILES:
        document = yaml.safe_load(path.read_text())
        assert [
            f"../{p.name}" for p in RULE_FILES if p.stem == path.stem.replace(".test", ".rules")
        ] == document["rule_files"]
        for case in document["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    names = {rule["alert"] for rule in alerts()}
    assert names - firing == set(), "alerts no promtool case fires"
    assert names - silent == set(), "alerts no promtool case keeps silent"
    assert (firing | silent) - names == set(), "promtool cases for alerts that do not exist"


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_alert_is_complete(rule: dict[str, Any]) -> None:
    assert re.fullmatch(r"[A-Z][A-Za-z0-9]+", rule["alert"])
    assert rule["labels"]["severity"] in SEVERITIES
    assert rule["labels"]["component"] in COMPONENTS
    annotations = rule["annotations"]
    assert set(annotations) == {"summary", "description", "runbook_url", "dashboard_url"}
    assert annotations["runbook_url"] == f"docs/runbooks.md#{rule['alert'].lower()}"
    # Written by `make dashboards` (tests/test_dashboards_static.py checks the panel).
    assert annotations["dashboard_url"] == alert_links()[rule["alert"]]
    assert f"\n## {rule['alert']}\n" in RUNBOOKS.read_text()
    # The description says what fired it (the promtool cases check how it renders);
    # absent() has no labels or value worth telling.
    assert "{{" in annotations["description"] or rule["expr"].startswith("absent(")


@pytest.mark.parametrize("rule", alerts(), ids=lambda rule: rule["alert"])
def test_expressions_use_contract_names_only(rule: dict[str, Any]) -> None:
    expr = re.sub(r"#[^\n]*", "", rule["expr"])
    regex_names = re.findall(r'__name__=~"([^"]+)"', expr)
    expr = re.sub(r"\{[^}]*\}", "{}", expr)  # label matchers are not metric names
    names = {
        token
        for token in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)
        if token.startswith(METRIC_PREFIXES) and token not in {"by", "without"}
    }
    assert names <= QUERYABLE, names - QUERYABLE
    for pattern in regex_names:
        matched = [name for name in QUERYABLE if re.fullmatch(pattern, name)]
        assert len(matched) >= 2, f"{pattern} matches {matched}"
    assert names or regex_names


def test_alerts_table_is_current() -> None:
    generated = table()
    assert generated in (ROOT / "docs" / "alerts.md").read_text(), (
        "docs/alerts.md is out of date: run python scripts/alerts_table.py"
    )
    assert generated.count("\n| [") == len(alerts())


def test_alertmanager_example_is_valid() -> None:
    amtool = require_binary("amtool")
    result = run(amtool, "check-config", ALERTMANAGER_EXAMPLE.name)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        ({"severity": "critical", "component": "engine"}, "trading-desk-page"),
        ({"severity": "critical", "component": "exchange"}, "trading-desk-page"),
        ({"severity": "warning", "component": "exchange"}, "trading-desk"),
        ({"severity": "critical", "component": "host"}, "platform-page"),
        ({"severity": "warning", "component": "sidecar"}, "platform"),
    ],
)
def test_alertmanager_example_routes(labels: dict[str, str], receiver: str) -> None:
    amtool = require_binary("amtool")
    result = run(
        amtool,
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER_EXAMPLE.name}",
        *(f"{k}={v}" for k, v in labels.items()),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == receiver


def test_alertmanager_example_receivers_exist() -> None:
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    assert {route["receiver"] for route in config["route"]["routes"]} <= receivers


def _matching(rules: list[dict[str, Any]], matchers: list[str]) -> list[dict[str, Any]]:
    for matcher in matchers:
        match = re.fullmatch(r'(alertname|component|severity)=~?"([^"]+)"', matcher)
        assert match, matcher
        key, pattern = match.groups()
        rules = [
            rule
            for rule in rules
            if re.fullmatch(pattern, rule["alert"] if key == "alertname" else rule["labels"][key])
        ]
    return rules


def _keeps(rule: dict[str, Any], label: str) -> bool:
    """Whether the alerts of `rule` carry `label` (no aggregation drops it)."""
    if label in ("alertname", "severity", "component"):
        return True
    groups = re.findall(r"\b(?:sum|max|min|avg|count) by \(([^)]*)\)", rule["expr"])
    return all(label in group for group in groups)


def test_inhibitions_can_match() -> None:
    # An inhibition applies only if source and target alerts exist and both carry
    # its `equal` labels.
    config = yaml.safe_load(ALERTMANAGER_EXAMPLE.read_text())
    rules = alerts()
    for inhibit in config["inhibit_rules"]:
        sources = _matching(rules, inhibit["source_matchers"])
        targets = _matching(rules, inhibit["target_matchers"])
        assert sources, f"inhibition {inhibit} has no source alert"
        assert targets, f"inhibition {inhibit} has no target alert"
        for rule in sources + targets:
            for label in inhibit.get("equal", []):
                assert _keeps(rule, label), f"{rule['alert']} drops {label}: {inhibit}"
        if "alertname" in inhibit.get("equal", []):
            names = {r["alert"] for r in sources} & {r["alert"] for r in targets}
            assert names, f"inhibition {inhibit} needs one alert at both ends"


def test_readme_counts_the_alerts() -> None:
    assert f"{len(alerts())} Prometheus alert rules" in (ROOT / "README.md").read_text()


def test_documented_series_are_parsed() -> None:
    # Guards the parser above: a change of table layout must not empty the set.
    documented = documented_series()
    assert {
        "node_filesystem_readonly",
        "engine_process_restarts_total",
        "trading_order_latency_seconds_bucket",
        "tickscope_forward_dropped_spans_total",
        "engine_cache_lookups_total",
    } <= documented
    assert "engine.cache.lookups" not in documented


def test_runbooks_have_no_orphans() -> None:
    sections = re.findall(r"^## ([A-Z][a-z]+[A-Z]\w*)$", RUNBOOKS.read_text(), re.MULTILINE)
    names = {rule["alert"] for rule in alerts()}
    assert set(sections) == names
    assert len(sections) == len(names)
