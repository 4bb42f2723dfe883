"""spec → grafana-foundation-sdk builders → the JSON Grafana imports.

Layout is the SDK's: panels flow left to right in 24 columns, each row starting a new
band. Panel ids (which the builder leaves unset, and which `viewPanel` links and alert
annotations use) are numbered here in the order the panels appear.
"""

from __future__ import annotations

import json
from typing import Any

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as builders
from grafana_foundation_sdk.builders import prometheus, stat, statushistory, table, timeseries
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prometheus_models

from tickscope_dashboards import spec
from tickscope_dashboards.common import VARIABLES
from tickscope_dashboards.thresholds import Step

DATASOURCE = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
REF_IDS = "ABCDEFGHIJ"
# Sidecars are scraped every 15-30 s in most setups; a minute's refresh keeps
# Prometheus's load low and the panels current enough for an operator.
REFRESH = "1m"


def _thresholds(steps: tuple[Step, ...]) -> builders.ThresholdsConfig:
    return (
        builders.ThresholdsConfig()
        .mode(models.ThresholdsMode.ABSOLUTE)
        .steps([models.Threshold(value=s.value, color=s.colour) for s in steps])
    )


def _targets(panel: spec.Panel) -> list[prometheus.Dataquery]:
    targets = []
    for ref, query in zip(REF_IDS, panel.queries, strict=False):
        target = prometheus.Dataquery().expr(query.expr).ref_id(ref).datasource(DATASOURCE)
        if query.legend:
            target = target.legend_format(query.legend)
        if query.instant:
            target = target.instant()
            if panel.kind == "table":
                target = target.format(prometheus_models.PromQueryFormat.TABLE)
        if query.exemplar:
            target = target.exemplar(True)
        targets.append(target)
    if len(panel.queries) > len(REF_IDS):
        raise ValueError(f"panel {panel.title!r}: more than {len(REF_IDS)} queries")
    return targets


def _timeseries(panel: spec.Panel) -> timeseries.Panel:
    built = (
        timeseries.Panel()
        .fill_opacity(20 if panel.stacked else 8)
        .line_width(1)
        .show_points(common_models.VisibilityMode.NEVER)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common_models.LegendDisplayMode.LIST)
            .placement(common_models.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
    )
    if panel.stacked:
        built = built.stacking(
            common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL)
        )
    if panel.steps:
        built = built.thresholds(_thresholds(panel.steps)).thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common_models.GraphThresholdsStyleMode.DASHED
            )
        )
    return built


def _stat(panel: spec.Panel) -> stat.Panel:
    built = (
        stat.Panel()
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
        .graph_mode(common_models.BigValueGraphMode.AREA)
        .color_mode(common_models.BigValueColorMode.VALUE)
        .text_mode(common_models.BigValueTextMode.AUTO)
        .thresholds(_thresholds(panel.steps or (Step(None, "green"),)))
    )
    if panel.value_text:
        built = built.mappings(
            [
                models.ValueMap(
                    options={
                        value: models.ValueMappingResult(text=text, color=colour, index=i)
                        for i, (value, text, colour) in enumerate(panel.value_text)
                    }
                )
            ]
        )
    return built


def _table(panel: spec.Panel) -> table.Panel:
    built = table.Panel().cell_height(common_models.TableCellHeight.SM)
    if len(panel.queries) > 1:
        built = built.with_transformation(models.DataTransformerConfig(id_val="merge", options={}))
    built = built.with_transformation(
        models.DataTransformerConfig(
            id_val="organize",
            options={
                "excludeByName": {name: True for name in panel.hidden_columns},
                "renameByName": dict(panel.columns),
            },
        )
    )
    for column, unit in panel.column_units:
        built = built.override_by_name(
            column, [models.DynamicConfigValue(id_val="unit", value=unit)]
        )
    if panel.sort_by:
        built = built.sort_by(
            [common_builders.TableSortByFieldState().display_name(panel.sort_by).desc(True)]
        )
    return built


def _status_history(panel: spec.Panel) -> statushistory.Panel:
    """One row per series, one cell per interval, coloured by the threshold steps: a
    heatmap of a gauge per label set (market-data age per stream)."""
    return (
        statushistory.Panel()
        .show_value(common_models.VisibilityMode.NEVER)
        .row_height(0.9)
        .col_width(0.9)
        .legend(common_builders.VizLegendOptions().show_legend(False))
        .thresholds(_thresholds(panel.steps or (Step(None, "green"),)))
        .color_scheme(builders.FieldColor().mode(models.FieldColorModeId.THRESHOLDS))
    )


def panel_builder(panel: spec.Panel) -> cogbuilder.Builder[models.Panel]:
    built: timeseries.Panel | stat.Panel | table.Panel | statushistory.Panel
    if panel.kind == "timeseries":
        built = _timeseries(panel)
    elif panel.kind == "stat":
        built = _stat(panel)
    elif panel.kind == "status-history":
        built = _status_history(panel)
    else:
        built = _table(panel)
    built = (
        built.title(panel.title)
        .description(panel.description)
        .datasource(DATASOURCE)
        .unit(panel.unit)
        .targets(list(_targets(panel)))
        .span(panel.width)
        .height(panel.height)
    )
    if panel.min is not None:
        built = built.min(panel.min)
    if panel.max is not None:
        built = built.max(panel.max)
    return built


def _variable(name: str) -> cogbuilder.Builder[models.VariableModel]:
    variable = VARIABLES[name]
    if variable.query is None:
        return (
            builders.DatasourceVariable(variable.name)
            .label(variable.label)
            .description(variable.description)
            .type("prometheus")
            .current(models.VariableOption(selected=True, text="default", value="default"))
        )
    return (
        builders.QueryVariable(variable.name)
        .label(variable.label)
        .description(variable.description)
        .datasource(DATASOURCE)
        .query({"query": variable.query, "refId": "PrometheusVariableQueryEditor-VariableQuery"})
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC)
        .multi(True)
        .include_all(True)
        # `.*` rather than Grafana's default list of every value: the queries stay
        # short with hundreds of instances, and series without the label still match.
        .all_value(".*")
        .current(models.VariableOption(selected=True, text="All", value="$__all"))
    )


def alerts_annotation() -> builders.AnnotationQuery:
    return (
        builders.AnnotationQuery()
        .name("Firing alerts")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("red")
    )


def alerts_annotation_target(dashboard: spec.Dashboard) -> dict[str, str]:
    """The annotation's Prometheus query, in `target` as Grafana's Prometheus
    datasource stores it (the SDK's top-level `expr` is not in Grafana's schema)."""
    components = "|".join(dashboard.alert_components)
    return {
        "refId": "Anno",
        "expr": f'ALERTS{{alertstate="firing", component=~"{components}", job=~"$job", instance=~"$instance"}}',
    }


def build(dashboard: spec.Dashboard) -> dict[str, Any]:
    """The dashboard as Grafana's JSON model, panel ids numbered from 1."""
    built = (
        builders.Dashboard(dashboard.title)
        .uid(dashboard.uid)
        .description(dashboard.description)
        .tags(list(dashboard.tags))
        .time("now-1h", "now")
        .refresh(REFRESH)
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .readonly()
        .link(
            builders.DashboardLink("tickscope")
            .type(models.DashboardLinkType.DASHBOARDS)
            .tags(["tickscope"])
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
        .annotation(alerts_annotation())
    )
    for name in dashboard.variables:
        built = built.with_variable(_variable(name))
    for row in dashboard.rows:
        if row.collapsed:
            collapsed = builders.Row(row.title)
            for panel in row.panels:
                collapsed = collapsed.with_panel(panel_builder(panel))
            built = built.with_row(collapsed)
        else:
            built = built.with_row(builders.Row(row.title).collapsed(False))
            for panel in row.panels:
                built = built.with_panel(panel_builder(panel))
    document: dict[str, Any] = json.loads(json.dumps(built.build(), cls=JSONEncoder))
    document["annotations"]["list"][0]["target"] = alerts_annotation_target(dashboard)
    for variable in document["templating"]["list"]:
        # The SDK writes an interval variable's auto settings on every variable;
        # Grafana's VariableModel has them on none.
        if variable["type"] != "interval":
            for key in ("auto", "auto_min", "auto_count"):
                variable.pop(key, None)
    next_id = 1
    for item in document["panels"]:
        item["id"] = next_id
        next_id += 1
        for nested in item.get("panels", []):
            nested["id"] = next_id
            next_id += 1
    return document


def to_json(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"
