"""Every dashboard, rendered, and what the tests and docs ask of them: panel ids by
title, the panels that are empty on a healthy system, and each alert's link."""

from __future__ import annotations

from functools import cache
from typing import Any

from tickscope_dashboards import host, render, sidecar, spec, trading

DASHBOARDS: tuple[spec.Dashboard, ...] = (host.DASHBOARD, trading.DASHBOARD, sidecar.DASHBOARD)


def by_uid(uid: str) -> spec.Dashboard:
    for dashboard in DASHBOARDS:
        if dashboard.uid == uid:
            return dashboard
    raise KeyError(uid)


@cache
def rendered(uid: str) -> dict[str, Any]:
    return render.build(by_uid(uid))


def file_name(uid: str) -> str:
    return f"{uid}.json"


def panel_ids(uid: str) -> dict[str, int]:
    """Panel title → id (rows included)."""
    ids: dict[str, int] = {}
    for item in rendered(uid)["panels"]:
        ids[item["title"]] = item["id"]
        for nested in item.get("panels", []):
            ids[nested["title"]] = nested["id"]
    return ids


def healthy_empty() -> dict[str, dict[str, str]]:
    """dashboard uid → {panel title: the fault that fills it} for the panels that
    show nothing on a healthy system."""
    return {
        d.uid: {p.title: p.healthy_empty for p in d.panels() if p.healthy_empty is not None}
        for d in DASHBOARDS
    }


def alert_panels() -> dict[str, tuple[spec.Dashboard, spec.Panel]]:
    """Each alert → the panel that shows its condition: the first graph that lists
    it, else the first panel that does."""
    chosen: dict[str, tuple[spec.Dashboard, spec.Panel]] = {}
    for prefer_graph in (True, False):
        for dashboard in DASHBOARDS:
            for panel in dashboard.panels():
                if prefer_graph and panel.kind != "timeseries":
                    continue
                for alert in panel.alerts:
                    chosen.setdefault(alert, (dashboard, panel))
    return chosen


def dashboard_url(uid: str, panel_title: str | None = None) -> str:
    """The path of a dashboard (or one panel of it, viewed alone) under Grafana's base
    URL: `/d/UID?viewPanel=ID` (Grafana 7 and later; Grafana adds the title's slug)."""
    path = f"/d/{by_uid(uid).uid}"
    if panel_title is None:
        return path
    return f"{path}?viewPanel={panel_ids(uid)[panel_title]}"


def alert_links() -> dict[str, str]:
    return {
        alert: dashboard_url(dashboard.uid, panel.title)
        for alert, (dashboard, panel) in sorted(alert_panels().items())
    }
