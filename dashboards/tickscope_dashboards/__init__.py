"""tickscope's Grafana dashboards, as code (grafana-foundation-sdk, Grafana 11.6 types).

`python -m tickscope_dashboards` (with dashboards/ on sys.path; `make dashboards`) writes
dashboards/*.json, the per-panel table of docs/dashboards.md and the alert rules'
`dashboard_url` annotations; `--check` fails when any of them differs from what this code
generates. Modules: `spec` (what a panel is: title, description, unit, queries, the alerts
it shows), `thresholds` (threshold steps read from alert-rules/), `common` (variables,
selectors, the shared rows and panels), one module per dashboard (`host`, `trading`,
`sidecar`), `render` (spec → Foundation SDK builders → Grafana JSON), `catalog` (all of them,
and what the tests ask of them).
"""
