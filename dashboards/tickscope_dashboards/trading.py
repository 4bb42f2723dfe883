"""Trading engine: how are the exchange calls and the orders doing, and the engine's own
runtime (what the shim sends over OTLP)?"""

from __future__ import annotations

from tickscope.connectors.trading import DEFAULT_REJECTED
from tickscope_dashboards.common import (
    EXCHANGE,
    SPANS,
    TARGET,
    alerts_panel,
    quantile,
    quantile_queries,
    rate,
    ratio_or_zero,
    red_row,
)
from tickscope_dashboards.spec import Dashboard, Panel, Query, Row
from tickscope_dashboards.thresholds import Step, steps

UID = "tickscope-trading"

CALLS = "traces_span_metrics_calls_total"
# The ccxt exceptions of an order the exchange refused: the sidecar's default
# trading.rejected_error_types, read from it so the two cannot drift.
REJECTED = f'error_type=~"{"|".join(DEFAULT_REJECTED)}"'
HIT = 'result="hit"'
ORDERS = "trading_orders_total"
ERROR_RATIO = ratio_or_zero(
    rate(CALLS, SPANS, 'status_code="STATUS_CODE_ERROR"'), rate(CALLS, SPANS), "exchange"
)
REJECTION_RATIO = ratio_or_zero(
    rate(ORDERS, EXCHANGE, 'outcome="rejected"'), rate(ORDERS, EXCHANGE), "exchange"
)
P99 = quantile(0.99, "traces_span_metrics_duration_seconds", SPANS, "exchange")


def overview() -> Row:
    def stat(
        title: str,
        description: str,
        unit: str,
        expr: str,
        legend: str,
        steps: tuple[Step, ...] = (),
    ) -> Panel:
        return Panel(
            title=title,
            description=description,
            unit=unit,
            kind="stat",
            width=4,
            height=4,
            queries=(Query(expr, legend),),
            steps=steps,
        )

    return Row(
        "Overview",
        (
            stat(
                "Exchange calls per second",
                "ccxt calls per second to each exchange.",
                "reqps",
                f"sum by (exchange) ({rate(CALLS, SPANS)})",
                "{{exchange}}",
            ),
            stat(
                "Exchange error ratio",
                "Share of exchange calls that failed; orange from ExchangeErrorRate's threshold.",
                "percentunit",
                ERROR_RATIO,
                "{{exchange}}",
                steps=steps("ExchangeErrorRate"),
            ),
            stat(
                "Exchange p99 latency",
                "99th percentile of exchange-call latency, all methods; orange from ExchangeHighLatency's threshold (which is per method).",
                "s",
                P99,
                "{{exchange}}",
                steps=steps("ExchangeHighLatency"),
            ),
            stat(
                "Orders per second",
                "Orders sent per second, all outcomes.",
                "ops",
                f"sum by (exchange) ({rate(ORDERS, EXCHANGE)})",
                "{{exchange}}",
            ),
            stat(
                "Order rejection ratio now",
                "Share of orders the exchange rejected; orange from OrderRejectionRate's threshold.",
                "percentunit",
                REJECTION_RATIO,
                "{{exchange}}",
                steps=steps("OrderRejectionRate"),
            ),
            stat(
                "Rate-limit budget used",
                "The highest share of its request budget the engine has used, per exchange, from the exchange's own headers; red from ExchangeRateLimitNearlyExhausted's threshold.",
                "percentunit",
                f"max by (exchange) (exchange_rate_limit_used_ratio{{{EXCHANGE}}})",
                "{{exchange}}",
                steps=steps("ExchangeRateLimitNearlyExhausted"),
            ),
            alerts_panel(("exchange",)),
        ),
    )


def orders() -> Row:
    return Row(
        "Orders",
        (
            Panel(
                title="Orders per second by outcome",
                description="Orders sent per second per exchange: accepted, rejected by the exchange (insufficient funds, invalid order, ...) or error (fate unknown: timeout, network).",
                unit="ops",
                queries=(
                    Query(
                        f"sum by (exchange, outcome) ({rate(ORDERS, EXCHANGE)})",
                        "{{exchange}} {{outcome}}",
                    ),
                ),
                stacked=True,
                min=0,
            ),
            Panel(
                title="Order rejection ratio",
                description="Share of orders the exchange rejected, per exchange; 0 when none was. The line is OrderRejectionRate's threshold.",
                unit="percentunit",
                queries=(Query(REJECTION_RATIO, "{{exchange}}"),),
                steps=steps("OrderRejectionRate"),
                alerts=("OrderRejectionRate",),
                min=0,
            ),
            Panel(
                title="Rejected orders by error type",
                description="Orders the exchange refused, per second, by ccxt exception class (InsufficientFunds, InvalidOrder, ...). Empty when none is.",
                unit="ops",
                queries=(
                    Query(
                        "sum by (exchange, error_type) "
                        f"({rate('exchange_api_errors_total', EXCHANGE, REJECTED)})",
                        "{{exchange}} {{error_type}}",
                    ),
                ),
                healthy_empty="rejected_order",
                min=0,
            ),
            Panel(
                title="Order latency",
                description="Time from sending an order to the exchange's answer, p50 and p99 per exchange; the points are exemplars linking to the order's trace.",
                unit="s",
                queries=quantile_queries(
                    "trading_order_latency_seconds",
                    EXCHANGE,
                    "exchange",
                    "{{exchange}}",
                    (0.5, 0.99),
                    exemplar=True,
                ),
                min=0,
            ),
        ),
    )


def rate_limits() -> Row:
    return Row(
        "Rate limits",
        (
            Panel(
                title="Rate-limit hits",
                description="Calls the exchange refused for rate limiting (429/418, RateLimitExceeded, DDoSProtection) per interval; ExchangeRateLimited fires on any.",
                unit="short",
                queries=(
                    Query(
                        f"sum by (exchange) (increase(exchange_rate_limit_hits_total{{{EXCHANGE}}}[$__rate_interval]))",
                        "{{exchange}}",
                    ),
                ),
                alerts=("ExchangeRateLimited",),
                min=0,
            ),
            Panel(
                title="Rate-limit budget used per exchange",
                description="Share of the request budget used (e.g. Binance's X-MBX-USED-WEIGHT against its limit), from the newest response; the line is ExchangeRateLimitNearlyExhausted's threshold.",
                unit="percentunit",
                queries=(
                    Query(
                        f"max by (exchange) (exchange_rate_limit_used_ratio{{{EXCHANGE}}})",
                        "{{exchange}}",
                    ),
                ),
                steps=steps("ExchangeRateLimitNearlyExhausted"),
                alerts=("ExchangeRateLimitNearlyExhausted",),
                min=0,
                max=1,
            ),
        ),
    )


def runtime() -> Row:
    return Row(
        "Engine runtime (OTLP metrics from the shim)",
        (
            Panel(
                title="Cache hit ratio",
                description="Share of lookups answered from each engine cache (shim.cache_metrics); a falling ratio means more exchange calls.",
                unit="percentunit",
                queries=(
                    Query(
                        f"sum by (cache) ({rate('engine_cache_lookups_total', TARGET, HIT)}) "
                        f"/ sum by (cache) ({rate('engine_cache_lookups_total', TARGET)})",
                        "{{cache}}",
                    ),
                ),
                min=0,
                max=1,
            ),
            Panel(
                title="Queue depth",
                description="Items waiting in each engine queue (shim.queue_gauge); a depth that only grows is a consumer that fell behind.",
                unit="short",
                queries=(Query(f"sum by (queue) (engine_queue_depth{{{TARGET}}})", "{{queue}}"),),
                min=0,
            ),
            Panel(
                title="GC pauses",
                description="Share of the engine's time spent in CPython's garbage collector, per generation: pauses stall the event loop.",
                unit="percentunit",
                queries=(
                    Query(
                        f"sum by (cpython_gc_generation) ({rate('cpython_gc_pause_time_seconds_total', TARGET)})",
                        "generation {{cpython_gc_generation}}",
                    ),
                ),
                stacked=True,
                min=0,
            ),
            Panel(
                title="GC collections",
                description="Garbage collections per second, per generation.",
                unit="ops",
                queries=(
                    Query(
                        f"sum by (cpython_gc_generation) ({rate('cpython_gc_collections_total', TARGET)})",
                        "generation {{cpython_gc_generation}}",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Engine memory (from the engine)",
                description="The engine's own report of its memory use (process.memory.usage), sent by the shim; compare with the sidecar's view on the host dashboard.",
                unit="bytes",
                queries=(Query(f"process_memory_usage_bytes{{{TARGET}}}", "{{instance}}"),),
                min=0,
            ),
            Panel(
                title="Spans the shim skipped",
                description="Spans the shim did not make per second while the sidecar was unreachable (its export gate); any value means missing exchange metrics.",
                unit="cps",
                queries=(
                    Query(
                        f"sum by (job, instance) ({rate('engine_telemetry_spans_skipped_total', TARGET)})",
                        "{{instance}}",
                    ),
                ),
                min=0,
            ),
        ),
    )


DASHBOARD = Dashboard(
    uid=UID,
    title="tickscope / Trading engine",
    description="The engine's exchange calls (rate, errors, duration per exchange and method), its orders, rate limits and runtime.",
    variables=("datasource", "job", "instance", "service", "exchange", "method"),
    rows=(overview(), red_row(), orders(), rate_limits(), runtime()),
    alert_components=("exchange",),
)
