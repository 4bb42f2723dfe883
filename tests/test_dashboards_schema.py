"""The dashboards satisfy Grafana's own published dashboard type (@grafana/schema).

scripts/check_dashboard_schema.py wraps each JSON file as `satisfies Dashboard` and
runs the project's tsc (dashboards/schema/, installed by scripts/install-node-deps.sh).
Every committed dashboards/*.json must pass; a small valid dashboard passes too, and
each broken copy of it is refused with an error naming the key. The samples share one
tsc run, the committed dashboards another.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import check_dashboard_schema as schema
import pytest

DASHBOARDS = sorted((schema.ROOT / "dashboards").glob("*.json"))

VALID: dict[str, Any] = {
    "uid": "schema-sample",
    "title": "Schema sample",
    "tags": ["tickscope"],
    "editable": True,
    "graphTooltip": 1,
    "schemaVersion": 41,
    "time": {"from": "now-1h", "to": "now"},
    "refresh": "30s",
    "links": [
        {
            "title": "tickscope",
            "type": "dashboards",
            "tags": ["tickscope"],
            "asDropdown": True,
            "icon": "external link",
            "includeVars": True,
            "keepTime": True,
            "targetBlank": False,
            "tooltip": "",
        }
    ],
    "annotations": {
        "list": [
            {
                "builtIn": 1,
                "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                "enable": True,
                "hide": True,
                "iconColor": "rgba(0, 211, 255, 1)",
                "name": "Annotations & Alerts",
                "type": "dashboard",
            },
            {
                "name": "Firing alerts",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "enable": True,
                "iconColor": "red",
                "target": {"refId": "Anno", "expr": 'ALERTS{alertstate="firing", job=~"$job"}'},
            },
        ]
    },
    "templating": {
        "list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {
                "name": "job",
                "type": "query",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": "label_values(process_cpu_seconds_total, job)",
                "multi": True,
                "includeAll": True,
                "allValue": ".*",
                "refresh": 2,
            },
        ]
    },
    "panels": [
        {
            "type": "row",
            "id": 1,
            "title": "Overview",
            "collapsed": False,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": 0},
            "panels": [],
        },
        {
            "type": "timeseries",
            "id": 2,
            "title": "Spans received",
            "description": "Spans per second the sidecar received.",
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 0, "y": 1},
            "fieldConfig": {
                "defaults": {
                    "unit": "reqps",
                    "thresholds": {
                        "mode": "absolute",
                        "steps": [{"color": "green", "value": None}, {"color": "red", "value": 80}],
                    },
                },
                "overrides": [],
            },
            "options": {
                "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}
            },
            "targets": [
                {
                    "refId": "A",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "expr": 'sum(rate(tickscope_receiver_accepted_spans_total{job=~"$job"}[$__rate_interval]))',
                    "legendFormat": "accepted",
                }
            ],
        },
        {
            "type": "row",
            "id": 3,
            "title": "Details",
            "collapsed": True,
            "gridPos": {"h": 1, "w": 24, "x": 0, "y": 9},
            "panels": [
                {
                    "type": "stat",
                    "id": 4,
                    "title": "Up",
                    "description": "1 while the engine runs.",
                    "datasource": {"type": "prometheus", "uid": "${datasource}"},
                    "gridPos": {"h": 4, "w": 6, "x": 0, "y": 10},
                    "fieldConfig": {"defaults": {"unit": "none"}, "overrides": []},
                    "targets": [{"refId": "A", "expr": 'engine_process_up{job=~"$job"}'}],
                }
            ],
        },
    ],
}


def _mutated(change: str) -> dict[str, Any]:
    dashboard = copy.deepcopy(VALID)
    panel = dashboard["panels"][1]
    if change == "misspelt_targets":
        panel["targtes"] = panel.pop("targets")
    elif change == "string_schema_version":
        dashboard["schemaVersion"] = "41"
    elif change == "grid_pos_without_h":
        del panel["gridPos"]["h"]
    elif change == "numeric_unit":
        panel["fieldConfig"]["defaults"]["unit"] = 1
    elif change == "unknown_top_level_key":
        dashboard["refreshInterval"] = "30s"
    elif change == "unknown_threshold_mode":
        panel["fieldConfig"]["defaults"]["thresholds"]["mode"] = "absolut"
    elif change == "graph_tooltip_out_of_range":
        dashboard["graphTooltip"] = 3
    elif change == "misspelt_key_in_collapsed_row":
        dashboard["panels"][2]["panels"][0]["gridpos"] = dashboard["panels"][2]["panels"][0].pop(
            "gridPos"
        )
    elif change == "annotation_expr_outside_target":
        annotation = dashboard["annotations"]["list"][1]
        annotation["expr"] = annotation["target"].pop("expr")
    elif change == "query_variable_with_interval_keys":
        # What grafana-foundation-sdk 11.6.0 writes on every variable.
        dashboard["templating"]["list"][1].update(auto=False, auto_min="10s", auto_count=30)
    elif change == "untyped_target_key":
        panel["targets"][0]["exprr"] = panel["targets"][0].pop("expr")
    else:
        raise AssertionError(change)
    return dashboard


# (line, column, JSON path, tsc code, message) of each error, for each broken copy.
# Lines and columns are those of json.dumps(indent=2) of the copy.
REFUSED: dict[str, list[tuple[int, int, str, str, str]]] = {
    "misspelt_targets": [
        (
            136,
            7,
            "panels[1].targtes",
            "TS2353",
            "Object literal may only specify known properties, and '\"targtes\"' does not exist in type '{…}'.",
        )
    ],
    "string_schema_version": [
        (9, 3, "schemaVersion", "TS2322", "Type 'string' is not assignable to type 'number'.")
    ],
    "grid_pos_without_h": [
        (
            104,
            7,
            "panels[1].gridPos",
            "TS2741",
            "Property 'h' is missing in type '{ w: number; x: number; y: number; }' but required in type '{…}'.",
        )
    ],
    "numeric_unit": [
        (
            112,
            11,
            "panels[1].fieldConfig.defaults.unit",
            "TS2322",
            "Type 'number' is not assignable to type 'string'.",
        )
    ],
    "unknown_top_level_key": [
        (
            191,
            3,
            "refreshInterval",
            "TS2353",
            "Object literal may only specify known properties, and '\"refreshInterval\"' does not exist in type '{…}'.",
        )
    ],
    "unknown_threshold_mode": [
        (
            114,
            13,
            "panels[1].fieldConfig.defaults.thresholds.mode",
            "TS2820",
            'Type \'"absolut"\' is not assignable to type \'"absolute" | "percentage"\'. Did you mean \'"absolute"\'?',
        )
    ],
    "graph_tooltip_out_of_range": [
        (
            8,
            3,
            "graphTooltip",
            "TS2322",
            "Type '3' is not assignable to type 'DashboardCursorSync | undefined'.",
        )
    ],
    "misspelt_key_in_collapsed_row": [
        (
            181,
            11,
            "panels[2].panels[0].gridpos",
            "TS2353",
            "Object literal may only specify known properties, and '\"gridpos\"' does not exist in type '{…}'.",
        )
    ],
    "annotation_expr_outside_target": [
        (
            55,
            9,
            "annotations.list[1].expr",
            "TS2353",
            "Object literal may only specify known properties, and '\"expr\"' does not exist in type '{…}'.",
        )
    ],
    "query_variable_with_interval_keys": [
        (
            78,
            9,
            "templating.list[1].auto",
            "TS2353",
            "Object literal may only specify known properties, and '\"auto\"' does not exist in type '{…}'.",
        )
    ],
}
# What Grafana's types leave open: a panel's targets are Record<string, unknown>
# (the query model belongs to the datasource plugin), so a misspelt target key passes.
# tests/test_dashboards_static.py checks the targets themselves.
ACCEPTED = ["valid", "untyped_target_key"]

INVALID_JSON = '{\n  "schemaVersion": 41\n  "title": "broken"\n}\n'
DUPLICATE_KEY = '{\n  "schemaVersion": 41,\n  "title": "one",\n  "title": "two"\n}\n'


def _check(paths: list[Path]) -> dict[Path, list[schema.SchemaError]]:
    try:
        errors = schema.check_errors(paths)
    except schema.ToolMissing as exc:
        pytest.skip(f"schema check not runnable: {exc}")
    by_file: dict[Path, list[schema.SchemaError]] = {path: [] for path in paths}
    for error in errors:
        assert error.file in by_file, f"an error outside the dashboards checked: {error}"
        by_file[error.file].append(error)
    return by_file


@pytest.fixture(scope="module")
def repo_results() -> dict[Path, list[schema.SchemaError]]:
    """One tsc run over every committed dashboard."""
    if not DASHBOARDS:
        return {}
    return _check(DASHBOARDS)


@pytest.fixture(scope="module")
def sample_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[schema.SchemaError]]:
    """One tsc run over the valid sample, each broken copy of it and the raw-text cases."""
    directory = tmp_path_factory.mktemp("schema-samples")
    texts = {"valid": json.dumps(VALID, indent=2)}
    for change in [*REFUSED, "untyped_target_key"]:
        texts[change] = json.dumps(_mutated(change), indent=2)
    texts["invalid_json"] = INVALID_JSON
    texts["duplicate_key"] = DUPLICATE_KEY
    paths = {}
    for name, text in texts.items():
        paths[name] = directory / f"{name}.json"
        paths[name].write_text(text)
    by_file = _check(list(paths.values()))
    return {name: by_file[path] for name, path in paths.items()}


@pytest.mark.parametrize("path", DASHBOARDS or [None], ids=[p.name for p in DASHBOARDS] or ["none"])
def test_committed_dashboard_satisfies_grafana_schema(
    path: Path | None, repo_results: dict[Path, list[schema.SchemaError]]
) -> None:
    if path is None:
        pytest.fail("no dashboards/*.json to check: the generated dashboards must be committed")
    errors = repo_results[path]
    assert not errors, "\n".join(str(error) for error in errors)


@pytest.mark.parametrize("name", ACCEPTED)
def test_sample_accepted(name: str, sample_results: dict[str, list[schema.SchemaError]]) -> None:
    assert sample_results[name] == []


@pytest.mark.parametrize("change", list(REFUSED))
def test_broken_sample_refused_naming_the_key(
    change: str, sample_results: dict[str, list[schema.SchemaError]]
) -> None:
    found = [(e.line, e.column, e.json_path, e.code, e.message) for e in sample_results[change]]
    assert found == REFUSED[change]


def test_invalid_json_refused_before_tsc(
    sample_results: dict[str, list[schema.SchemaError]],
) -> None:
    found = [
        (e.line, e.column, e.json_path, e.code, e.message) for e in sample_results["invalid_json"]
    ]
    assert found == [(3, 3, "", "", "invalid JSON: Expecting ',' delimiter")]


def test_duplicate_key_refused(sample_results: dict[str, list[schema.SchemaError]]) -> None:
    # JSON parsers keep the last of two equal keys; TypeScript refuses the pair.
    found = [
        (e.line, e.column, e.json_path, e.code, e.message) for e in sample_results["duplicate_key"]
    ]
    assert found == [
        (
            4,
            3,
            "title",
            "TS1117",
            "An object literal cannot have multiple properties with the same name.",
        )
    ]


def test_error_line_names_file_line_and_key(tmp_path: Path) -> None:
    error = schema.SchemaError(tmp_path / "d.json", 7, 5, "panels[0].targtes", "TS2353", "unknown")
    assert str(error) == f"{tmp_path / 'd.json'}:7:5: panels[0].targtes: unknown [TS2353]"


def test_json_spans_give_the_innermost_path() -> None:
    text = '{"a": [1, {"b c": true}], "d": {"e": null}}'
    assert schema.json_spans(text) == [
        (7, 8, "a[0]"),
        (11, 22, 'a[1]["b c"]'),
        (10, 23, "a[1]"),
        (1, 24, "a"),
        (32, 41, "d.e"),
        (26, 42, "d"),
    ]
