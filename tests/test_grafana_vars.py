"""tests/helpers/grafana_vars.py: Grafana's interpolation of Prometheus targets,
checked against values worked out by hand from Grafana 11's rangeutil and the
Prometheus datasource's createQuery."""

from __future__ import annotations

from typing import Any

import pytest

from helpers.grafana_vars import (
    InterpolationError,
    PanelQuery,
    QueryOptions,
    Value,
    builtins,
    calculate_interval,
    dashboard_variables,
    interpolate,
    interval_to_seconds,
    js_number,
    max_data_points,
    panel_queries,
    relative_range_ms,
    round_interval,
    seconds_to_hms,
    walk_panels,
)

MINUTE = 60_000
HOUR = 60 * MINUTE


@pytest.mark.parametrize(
    ("interval_ms", "rounded"),
    [
        (5, 1),
        (10, 10),
        (300, 200),
        (350, 500),
        (1499, 1000),
        (3600, 5000),
        (7500, 10000),
        (60_000, 60000),
        (864_000, 900000),
        (3_628_800_000, 31536000000),
    ],
)
def test_round_interval(interval_ms: float, rounded: int) -> None:
    assert round_interval(interval_ms) == rounded


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.2, "200ms"),
        (1, "1s"),
        (90, "1m"),
        (900, "15m"),
        (7200, "2h"),
        (86400 * 2, "2d"),
        (31536000, "1y"),
        (0.0001, "less than a millisecond"),
    ],
)
def test_seconds_to_hms(seconds: float, text: str) -> None:
    assert seconds_to_hms(seconds) == text


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("15s", 15), ("500ms", 0.5), ("2m", 120), ("1h", 3600), ("30", 30), ("1.5s", 1)],
)
def test_interval_to_seconds(text: str, seconds: float) -> None:
    assert interval_to_seconds(text) == seconds


def test_interval_to_seconds_refuses_garbage() -> None:
    with pytest.raises(InterpolationError, match="invalid interval 'soon'"):
        interval_to_seconds("soon")


@pytest.mark.parametrize(
    ("range_ms", "points", "low", "expected"),
    [
        (HOUR, 1000, "1s", (5000, "5s")),
        (5 * MINUTE, 1000, "1s", (1000, "1s")),
        (5 * MINUTE, 1000, None, (200, "200ms")),
        (24 * HOUR, 100, "15s", (900000, "15m")),
    ],
)
def test_calculate_interval(
    range_ms: int, points: int, low: str | None, expected: tuple[int, str]
) -> None:
    assert calculate_interval(range_ms, points, low) == expected


@pytest.mark.parametrize(
    ("options", "variables", "step"),
    [
        # 1 h over 1000 px, 1 s scrapes: 3.6 s rounds to 5 s; rate: max(5 + 1, 4 x 1).
        (
            QueryOptions(HOUR, 1000, "1s"),
            {
                "__interval": "5s",
                "__interval_ms": "5000",
                "__rate_interval": "6s",
                "__rate_interval_ms": "6000",
                "__range": "3600s",
                "__range_s": "3600",
                "__range_ms": "3600000",
            },
            5,
        ),
        # 5 min: 0.3 s rounds to 0.2 s, floored at the 1 s scrape interval; rate 4 x 1 s.
        (
            QueryOptions(5 * MINUTE, 1000, "1s"),
            {
                "__interval": "1s",
                "__interval_ms": "1000",
                "__rate_interval": "4s",
                "__rate_interval_ms": "4000",
                "__range": "300s",
                "__range_s": "300",
                "__range_ms": "300000",
            },
            1,
        ),
        # No scrape interval on the datasource: no floor (200ms), and rate 4 x 15 s.
        (
            QueryOptions(5 * MINUTE, 1000),
            {
                "__interval": "200ms",
                "__interval_ms": "200",
                "__rate_interval": "60s",
                "__rate_interval_ms": "60000",
                "__range": "300s",
                "__range_s": "300",
                "__range_ms": "300000",
            },
            0.2,
        ),
        # A target's min step of 30 s: the interval and the scrape interval become 30 s.
        (
            QueryOptions(HOUR, 1000, "1s", target_interval="30s"),
            {
                "__interval": "30s",
                "__interval_ms": "30000",
                "__rate_interval": "120s",
                "__rate_interval_ms": "120000",
                "__range": "3600s",
                "__range_s": "3600",
                "__range_ms": "3600000",
            },
            30,
        ),
        # 30 days at 100,000 points: 236 s keeps the query under 11,000 points; the
        # rate interval comes from the interval before that adjustment (30 s + 1 s).
        (
            QueryOptions(30 * 24 * HOUR, 100_000, "1s"),
            {
                "__interval": "236s",
                "__interval_ms": "236000",
                "__rate_interval": "31s",
                "__rate_interval_ms": "31000",
                "__range": "2592000s",
                "__range_s": "2592000",
                "__range_ms": "2592000000",
            },
            236,
        ),
        # A panel's min interval is the floor, and an interval factor multiplies.
        (
            QueryOptions(5 * MINUTE, 1000, "1s", panel_interval="10s", interval_factor=2),
            {
                "__interval": "20s",
                "__interval_ms": "20000",
                "__rate_interval": "11s",
                "__rate_interval_ms": "11000",
                "__range": "300s",
                "__range_s": "300",
                "__range_ms": "300000",
            },
            20,
        ),
        # A range that is not whole seconds: $__range rounds half up.
        (
            QueryOptions(90_500, 1000, "1s"),
            {
                "__interval": "1s",
                "__interval_ms": "1000",
                "__rate_interval": "4s",
                "__rate_interval_ms": "4000",
                "__range": "91s",
                "__range_s": "91",
                "__range_ms": "90500",
            },
            1,
        ),
    ],
)
def test_builtins(options: QueryOptions, variables: dict[str, str], step: float) -> None:
    built = builtins(options)
    assert built.variables == variables
    assert built.step_s == step


ALL = {"job": Value(".*", "All"), "instance": Value(".*", "All"), "env": Value("prod", "prod")}
BUILT = builtins(QueryOptions(5 * MINUTE, 1000, "1s")).variables


@pytest.mark.parametrize(
    ("expr", "out"),
    [
        (
            'sum by (instance) (rate(x_total{job=~"$job", instance=~"$instance"}[$__rate_interval]))',
            'sum by (instance) (rate(x_total{job=~".*", instance=~".*"}[4s]))',
        ),
        ('up{job=~"${job}"}', 'up{job=~".*"}'),
        ('up{job=~"[[job]]"}', 'up{job=~".*"}'),
        ('up{job=~"${job:regex}"}', 'up{job=~".*"}'),
        ('up{job=~"${job:pipe}"}', 'up{job=~".*"}'),
        ('up{job=~"[[job:raw]]"}', 'up{job=~".*"}'),
        ('label_replace(up, "l", "${job:text}", "", "")', 'label_replace(up, "l", "All", "", "")'),
        ('up{env="$env"}', 'up{env="prod"}'),
        ("increase(x[$__range]) / $__range_s", "increase(x[300s]) / 300"),
        ("rate(x[${__rate_interval}])", "rate(x[4s])"),
        ("x > $__interval_ms", "x > 1000"),
        ("avg_over_time(x[$__interval])", "avg_over_time(x[1s])"),
        ("x * $__range_ms", "x * 300000"),
        ("up", "up"),
    ],
)
def test_interpolate(expr: str, out: str) -> None:
    assert interpolate(expr, ALL, BUILT) == out


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ('up{job=~"$nope"}', r"unknown variable \$nope"),
        ('up{job=~"$jobs"}', r"unknown variable \$jobs"),  # \w+ is greedy, as in Grafana
        ('up{x=~"$datasource"}', r"unknown variable \$datasource"),
        ('up{job=~"${job.name}"}', r"field path \$\{job.name\}"),
        ('up{job=~"${job:percentencode}"}', r"format :percentencode of \$job not supported"),
        ('up{job=~"${job:shout}"}', r"unknown format :shout of \$job"),
        ('up{mountpoint=~"/data$"}', r"'\$' left after interpolation"),
        ('up{job="$"}', r"'\$' left after interpolation"),
        ("x[${__range:regex}]", r"format :regex of built-in \$__range"),
    ],
)
def test_interpolate_refuses(expr: str, message: str) -> None:
    with pytest.raises(InterpolationError, match=message):
        interpolate(expr, ALL, BUILT)


def dashboard(*variables: dict[str, Any]) -> dict[str, Any]:
    return {"templating": {"list": list(variables)}}


def test_dashboard_variables() -> None:
    d = dashboard(
        {"name": "datasource", "type": "datasource", "query": "prometheus"},
        {"name": "job", "type": "query", "multi": True, "includeAll": True, "allValue": ".*"},
        {"name": "region", "type": "constant", "query": "eu-west-1"},
        {"name": "env", "type": "custom", "current": {"value": "prod", "text": "Production"}},
    )
    assert dashboard_variables(d) == {
        "job": Value(".*", "All"),
        "region": Value("eu-west-1", "eu-west-1"),
        "env": Value("prod", "Production"),
    }


def test_dashboard_variables_refuse_an_all_without_all_value() -> None:
    d = dashboard({"name": "job", "type": "query", "multi": True, "includeAll": True})
    with pytest.raises(InterpolationError, match="'job' includes All but has no allValue"):
        dashboard_variables(d)


def test_dashboard_variables_refuse_a_multi_value_current() -> None:
    d = dashboard({"name": "job", "type": "custom", "current": {"value": ["a", "b"]}})
    with pytest.raises(InterpolationError, match=r"'job' \(custom\) has neither includeAll"):
        dashboard_variables(d)


@pytest.mark.parametrize(
    ("start", "ms"), [("now-5m", 300_000), ("now-1h", 3_600_000), ("now-30s", 30_000)]
)
def test_relative_range_ms(start: str, ms: int) -> None:
    assert relative_range_ms(start) == ms


def test_relative_range_ms_refuses_absolute_ranges() -> None:
    with pytest.raises(InterpolationError, match="only now-N<unit> to now"):
        relative_range_ms("2024-01-01T00:00:00Z")


@pytest.mark.parametrize(("x", "text"), [(1.0, "1"), (0.5, "0.5"), (236.0, "236"), (4, "4")])
def test_js_number(x: float, text: str) -> None:
    assert js_number(x) == text


SAMPLE: dict[str, Any] = {
    "templating": {
        "list": [
            {"name": "datasource", "type": "datasource", "query": "prometheus"},
            {"name": "job", "type": "query", "includeAll": True, "allValue": ".*"},
        ]
    },
    "panels": [
        {"type": "row", "title": "Open row", "collapsed": False, "panels": []},
        {
            "type": "stat",
            "id": 1,
            "title": "Up",
            "gridPos": {"x": 0, "y": 0, "w": 6, "h": 4},
            "targets": [{"refId": "A", "expr": 'up{job=~"$job"}', "instant": True}],
        },
        {
            "type": "row",
            "title": "Collapsed row",
            "collapsed": True,
            "panels": [
                {
                    "type": "timeseries",
                    "id": 3,
                    "title": "Rate",
                    "maxDataPoints": 100,
                    "targets": [
                        {
                            "refId": "A",
                            "expr": "rate(x_total[$__rate_interval])",
                            "exemplar": True,
                        },
                        {"refId": "B", "expr": "x_total", "hide": True, "range": True},
                    ],
                }
            ],
        },
    ],
}


def test_walk_panels_includes_collapsed_rows_panels_and_skips_rows() -> None:
    assert [p["title"] for p in walk_panels(SAMPLE)] == ["Up", "Rate"]


@pytest.mark.parametrize(
    ("panel", "points"),
    [
        ({"gridPos": {"w": 6}}, 480),
        ({"gridPos": {"w": 24}}, 1920),
        ({"maxDataPoints": 100, "gridPos": {"w": 24}}, 100),
        ({}, 1920),
    ],
)
def test_max_data_points(panel: dict[str, Any], points: int) -> None:
    assert max_data_points(panel) == points


def test_panel_queries() -> None:
    # "Up", 6 columns (480 px): 7.5 s rounds to 10 s. "Rate", 100 points: 36 s rounds
    # to 30 s; its rate interval max(30 + 1, 4).
    assert panel_queries(SAMPLE, HOUR, "1s") == [
        PanelQuery("Up", 1, "A", 'up{job=~"$job"}', 'up{job=~".*"}', 10, True, False, False, False),
        PanelQuery(
            "Rate",
            3,
            "A",
            "rate(x_total[$__rate_interval])",
            "rate(x_total[31s])",
            30,
            False,
            True,
            True,
            False,
        ),
        PanelQuery("Rate", 3, "B", "x_total", "x_total", 30, False, True, False, True),
    ]


def test_panel_queries_name_the_panel_of_a_bad_target() -> None:
    bad = {"panels": [{"type": "stat", "title": "Bad", "targets": [{"refId": "Z", "expr": "$x"}]}]}
    with pytest.raises(InterpolationError, match=r"panel 'Bad' target Z: unknown variable \$x"):
        panel_queries(bad, HOUR, "1s")
