"""Pieces every dashboard shares: the filter variables, label selectors, the firing-alerts
panel, the RED row, and the names of the faults that fill the panels a healthy system
leaves empty."""

from __future__ import annotations

from dataclasses import dataclass

from tickscope_dashboards.spec import Panel, Query, Row
from tickscope_dashboards.thresholds import steps

# Faults the live-data test injects (tests/test_dashboards_live.py): a panel that is empty
# on a healthy system names the one that fills it, and docs/dashboards.md prints why.
FAULTS = {
    "rate_limit": "the exchange answers 429 (Binance code -1003): rate-limit errors",
    "server_error": "the exchange answers 503: ExchangeNotAvailable errors",
    "rejected_order": "the exchange rejects orders (insufficient balance)",
    "bad_otlp": "malformed OTLP requests, invalid spans and invalid metric points",
    "overflow": "more label sets than the span, trading and OTLP metric limits",
    "upstream_down": "the forwarder's upstream is down and its buffer overflows",
    "engine_down": "the engine process stops",
    "ws_drop": "the exchange drops the websocket connections",
    "ws_pause": "a websocket stream stops updating",
    "alerts": "an alert fires",
    "sensors": "the machine has temperature sensors (most VMs and containers have none)",
}


@dataclass(frozen=True)
class Variable:
    name: str
    label: str
    description: str
    # label_values() query, with the variables it depends on; None: the datasource.
    query: str | None


# Scrape labels: Prometheus adds job and instance (a ServiceMonitor adds namespace and
# pod as well); a pod's engine and sidecar share them, so one filter serves every panel.
VARIABLES = {
    "datasource": Variable(
        "datasource", "Data source", "The Prometheus that scrapes tickscope.", None
    ),
    "job": Variable(
        "job",
        "Job",
        "Prometheus scrape job of the sidecars.",
        "label_values(tickscope_build_info, job)",
    ),
    "instance": Variable(
        "instance",
        "Instance",
        "One sidecar (its pod or host:port).",
        'label_values(tickscope_build_info{job=~"$job"}, instance)',
    ),
    "process": Variable(
        "process",
        "Engine process",
        "The watched engine process (engine.processes[].name).",
        'label_values(engine_process_up{job=~"$job", instance=~"$instance"}, process)',
    ),
    "service": Variable(
        "service",
        "Service",
        "The engine's service.name.",
        'label_values(traces_span_metrics_calls_total{job=~"$job", instance=~"$instance"}, service_name)',
    ),
    "exchange": Variable(
        "exchange",
        "Exchange",
        "ccxt exchange id.",
        'label_values(traces_span_metrics_calls_total{job=~"$job", instance=~"$instance", exchange!=""}, exchange)',
    ),
    "method": Variable(
        "method",
        "Method",
        "ccxt unified API method.",
        'label_values(traces_span_metrics_calls_total{job=~"$job", instance=~"$instance", exchange=~"$exchange", exchange!=""}, method)',
    ),
}

# Label matchers, to put inside {...}.
TARGET = 'job=~"$job", instance=~"$instance"'
PROCESS = f'{TARGET}, process=~"$process"'
EXCHANGE = f'{TARGET}, exchange=~"$exchange"'
METHOD = 'method=~"$method"'
# The shim's ccxt spans: client spans with an exchange.
SPANS = (
    f'{TARGET}, service_name=~"$service", span_kind="SPAN_KIND_CLIENT", '
    'exchange!="", exchange=~"$exchange", method=~"$method"'
)
RATE = "$__rate_interval"


def rate(metric: str, *matchers: str, window: str = RATE) -> str:
    """rate(metric{matchers...}[window]); each argument a comma-separated list of matchers."""
    return f"rate({metric}{{{', '.join(matchers)}}}[{window}])"


def quantile(q: float, histogram: str, matchers: str, by: str, window: str = RATE) -> str:
    """The q-quantile of a histogram's buckets per `by` (le added)."""
    return f"histogram_quantile({q}, sum by ({by}, le) ({rate(f'{histogram}_bucket', matchers, window=window)}))"


def quantile_queries(
    histogram: str,
    matchers: str,
    by: str,
    legend: str,
    qs: tuple[float, ...],
    exemplar: bool = False,
) -> tuple[Query, ...]:
    """One query per quantile, legends `p50 <legend>`, `p99 <legend>`."""
    return tuple(
        Query(
            quantile(q, histogram, matchers, by), f"p{round(q * 100)} {legend}", exemplar=exemplar
        )
        for q in qs
    )


def ratio_or_zero(numerator: str, denominator: str, by: str) -> str:
    """numerator / denominator, 0 where the numerator has no series (no errors yet):
    a ratio panel shows 0% on a healthy system, not "No data"."""
    return f"(sum by ({by}) ({numerator}) or 0 * sum by ({by}) ({denominator})) / sum by ({by}) ({denominator})"


def alerts_panel(components: tuple[str, ...], width: int = 24, height: int = 6) -> Panel:
    """The alerts firing now for these rule components (the rules' `component` label)."""
    names = "|".join(components)
    return Panel(
        title="Firing alerts",
        description=(
            f"Alerts of tickscope's rules (component {', '.join(components)}) firing now, from "
            "Prometheus's ALERTS series; empty when all is well. Each alert's dashboard_url "
            "annotation links to the panel that shows its condition."
        ),
        unit="none",
        kind="table",
        width=width,
        height=height,
        queries=(
            Query(
                f"sum by (alertname, severity, {_alert_labels(components)}) "
                f'(ALERTS{{alertstate="firing", component=~"{names}", {TARGET}}})',
                instant=True,
            ),
        ),
        columns=(("Value", "firing"),),
        healthy_empty="alerts",
    )


def _alert_labels(components: tuple[str, ...]) -> str:
    extra = {"host": "instance", "engine": "process", "exchange": "exchange", "sidecar": "instance"}
    return ", ".join(sorted({"instance", *(extra[c] for c in components)}))


def red_row(selector: str = SPANS) -> Row:
    """Rate, errors and duration of the engine's exchange calls, per exchange and method,
    from the spanmetrics histogram and counter."""
    calls = "traces_span_metrics_calls_total"
    durations = "traces_span_metrics_duration_seconds"
    errors = rate(calls, selector, 'status_code="STATUS_CODE_ERROR"')

    return Row(
        "Exchange API: rate, errors, duration",
        (
            Panel(
                title="Requests per second by exchange and method",
                description="ccxt calls per second the engine makes, per exchange and unified API method (every span of the shim's ccxt instrumentation).",
                unit="reqps",
                queries=(
                    Query(
                        f"sum by (exchange, method) ({rate(calls, selector)})",
                        "{{exchange}} {{method}}",
                    ),
                ),
                stacked=True,
            ),
            Panel(
                title="Latency p50 / p95 / p99 by method",
                description="Exchange-call latency quantiles per method, from the span-duration histogram; the points are exemplars: click one to open its trace. The red line is ExchangeHighLatency's p99 threshold.",
                unit="s",
                queries=quantile_queries(
                    durations,
                    selector,
                    "exchange, method",
                    "{{exchange}} {{method}}",
                    (0.5, 0.95, 0.99),
                    exemplar=True,
                ),
                steps=steps("ExchangeHighLatency"),
                alerts=("ExchangeHighLatency",),
            ),
            Panel(
                title="Error ratio by exchange",
                description="Share of exchange calls that failed (span status ERROR), per exchange; 0 when none did. The line is ExchangeErrorRate's threshold.",
                unit="percentunit",
                queries=(
                    Query(ratio_or_zero(errors, rate(calls, selector), "exchange"), "{{exchange}}"),
                ),
                steps=steps("ExchangeErrorRate"),
                alerts=("ExchangeErrorRate",),
                min=0,
            ),
            Panel(
                title="Errors by error type",
                description="Failed exchange calls per second by ccxt exception class (RateLimitExceeded, InsufficientFunds, RequestTimeout, ...), exchange and method. Empty when no call fails.",
                unit="reqps",
                queries=(
                    Query(
                        f"sum by (exchange, method, error_type) ({rate('exchange_api_errors_total', EXCHANGE, METHOD)})",
                        "{{exchange}} {{method}} {{error_type}}",
                    ),
                ),
                alerts=("ExchangeUnreachable",),
                healthy_empty="rate_limit",
                stacked=True,
            ),
            Panel(
                title="Slowest methods",
                description="Every exchange method over the dashboard's time range, slowest p99 first, with its p50 and call rate.",
                unit="s",
                kind="table",
                width=24,
                queries=(
                    Query(
                        quantile(0.99, durations, selector, "exchange, method", "$__range"),
                        instant=True,
                    ),
                    Query(
                        quantile(0.5, durations, selector, "exchange, method", "$__range"),
                        instant=True,
                    ),
                    Query(
                        f"sum by (exchange, method) (rate({calls}{{{selector}}}[$__range]))",
                        instant=True,
                    ),
                ),
                columns=(("Value #A", "p99"), ("Value #B", "p50"), ("Value #C", "calls/s")),
                column_units=(("calls/s", "reqps"),),
                sort_by="p99",
            ),
        ),
    )
