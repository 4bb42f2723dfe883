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
from tickscope_dashboards.thresholds import Step, steps, threshold

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


WS = "exchange_ws_update_age_seconds"
# The streams MarketDataStale judges: those that update on their own.
SELF_UPDATING = 'method=~"watch_ticker|watch_tickers|watch_order_book|watch_ohlcv|watch_bids_asks"'


def market_data() -> Row:
    skew = threshold("ExchangeClockSkew")
    return Row(
        "Market data and clocks",
        (
            Panel(
                title="Websocket updates per second",
                description="Updates per second each ccxt.pro stream delivers (watch_ticker, watch_order_book, ...), per exchange, method and symbol.",
                unit="cps",
                queries=(
                    Query(
                        f"sum by (exchange, method, symbol) ({rate('exchange_ws_updates_total', EXCHANGE)})",
                        "{{exchange}} {{method}} {{symbol}}",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Websocket data age",
                description="Age of each stream's newest update (now minus the exchange's timestamp in it, else its arrival), read at each export; it grows while a stream is silent. The line is MarketDataStale's threshold (self-updating streams only).",
                unit="s",
                queries=(
                    Query(
                        f"max by (exchange, method, symbol) ({WS}{{{EXCHANGE}}})",
                        "{{exchange}} {{method}} {{symbol}}",
                    ),
                ),
                steps=steps("MarketDataStale"),
                alerts=("MarketDataStale",),
                min=0,
            ),
            Panel(
                title="Market data freshness heatmap",
                description="Each self-updating stream's data age over time, one row per stream: green while fresh, red from MarketDataStale's threshold. A red band across all rows is the exchange or the connection; one red row is one symbol.",
                unit="s",
                kind="status-history",
                width=24,
                queries=(
                    Query(
                        f"max by (exchange, method, symbol) ({WS}{{{EXCHANGE}, {SELF_UPDATING}}})",
                        "{{exchange}} {{symbol}} {{method}}",
                    ),
                ),
                steps=steps("MarketDataStale"),
            ),
            Panel(
                title="Websocket update gaps",
                description="Time between consecutive updates of a stream, p50 and p99 per exchange and method: the feed's own cadence, and its stalls.",
                unit="s",
                queries=quantile_queries(
                    "exchange_ws_update_gap_seconds",
                    EXCHANGE,
                    "exchange, method",
                    "{{exchange}} {{method}}",
                    (0.5, 0.99),
                ),
                min=0,
            ),
            Panel(
                title="Websocket reconnects and errors",
                description="Reconnects per interval per exchange (ccxt.pro reconnects on the engine's next watch call after a drop), and errors per second out of watch_* by ccxt class. Errors are empty while every stream is healthy.",
                unit="short",
                queries=(
                    Query(
                        f"sum by (exchange) (increase(exchange_ws_reconnects_total{{{EXCHANGE}}}[$__rate_interval]))",
                        "{{exchange}} reconnects",
                    ),
                    Query(
                        f"sum by (exchange, method, error_type) ({rate('exchange_ws_errors_total', EXCHANGE)})",
                        "{{exchange}} {{method}} {{error_type}}",
                    ),
                ),
                alerts=("WebsocketReconnectStorm",),
                healthy_empty="ws_drop",
                min=0,
            ),
            Panel(
                title="REST market data age",
                description="Age of the data the newest REST call returned (fetch_ticker, fetch_trades, fetch_ohlcv, ...): the engine's clock at the response minus the data's timestamp. It includes the clock skew below.",
                unit="s",
                queries=(
                    Query(
                        f"max by (exchange, method, symbol) (exchange_marketdata_age_seconds{{{EXCHANGE}}})",
                        "{{exchange}} {{method}} {{symbol}}",
                    ),
                ),
            ),
            Panel(
                title="Clock skew",
                description=f"The exchange's clock minus the engine's (positive: the exchange is ahead), with the estimate's error band; the lines are ExchangeClockSkew's ±{skew.value:g} s.",
                unit="s",
                queries=(
                    Query(
                        f"max by (exchange) (exchange_clock_skew_seconds{{{EXCHANGE}}})",
                        "{{exchange}}",
                    ),
                    Query(
                        f"max by (exchange) (exchange_clock_skew_seconds{{{EXCHANGE}}} + exchange_clock_skew_uncertainty_seconds{{{EXCHANGE}}})",
                        "{{exchange}} upper bound",
                    ),
                    Query(
                        f"max by (exchange) (exchange_clock_skew_seconds{{{EXCHANGE}}} - exchange_clock_skew_uncertainty_seconds{{{EXCHANGE}}})",
                        "{{exchange}} lower bound",
                    ),
                ),
                steps=(
                    Step(None, skew.colour),
                    Step(-skew.value, "green"),
                    Step(skew.value, skew.colour),
                ),
                alerts=("ExchangeClockSkew",),
            ),
            Panel(
                title="Timestamp rejections",
                description="Calls refused for their timestamp or nonce per interval (InvalidNonce: Binance -1021, outside recvWindow), per exchange and method; ExchangeTimestampRejections fires on any.",
                unit="short",
                queries=(
                    Query(
                        f"sum by (exchange, method) (increase(exchange_timestamp_rejections_total{{{EXCHANGE}}}[$__rate_interval]))",
                        "{{exchange}} {{method}}",
                    ),
                ),
                alerts=("ExchangeTimestampRejections",),
                min=0,
            ),
        ),
    )


QUOTE = 'currency=~"USDT|USDC|FDUSD|BUSD|USD|EUR"'


def account() -> Row:
    total = f'trading_balance{{{EXCHANGE}, kind="total"}}'
    quote_total = f'trading_balance{{{EXCHANGE}, kind="total", {QUOTE}}}'
    high = f"max by (exchange, currency) (max_over_time({quote_total}[24h]))"
    return Row(
        "Account (the shim's account_metrics)",
        (
            Panel(
                title="Balances",
                description="Total balance per exchange and currency held (fetch_balance), in the currency's own units. Empty unless the engine runs with account_metrics on.",
                unit="short",
                queries=(
                    Query(f"sum by (exchange, currency) ({total})", "{{exchange}} {{currency}}"),
                ),
            ),
            Panel(
                title="Balance drawdown over 24 h",
                description="How far each quote-currency balance is below its highest of the last 24 hours; the line is BalanceDrawdown's threshold (the daily loss limit). Withdrawals count as losses here.",
                unit="percentunit",
                queries=(
                    Query(
                        f"({high} - max by (exchange, currency) ({quote_total})) / {high}",
                        "{{exchange}} {{currency}}",
                    ),
                ),
                steps=steps("BalanceDrawdown"),
                alerts=("BalanceDrawdown",),
                min=0,
            ),
            Panel(
                title="Open orders",
                description="Open orders per exchange, symbol and side (fetch_open_orders).",
                unit="short",
                queries=(
                    Query(
                        f"sum by (exchange, symbol, side) (trading_open_orders{{{EXCHANGE}}})",
                        "{{exchange}} {{symbol}} {{side}}",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Oldest open order",
                description="Age of the oldest open order per symbol, as of the newest fetch_open_orders; the line is OrdersOpenTooLong's threshold.",
                unit="s",
                queries=(
                    Query(
                        f"max by (exchange, symbol) (trading_open_order_oldest_age_seconds{{{EXCHANGE}}})",
                        "{{exchange}} {{symbol}}",
                    ),
                ),
                steps=steps("OrdersOpenTooLong"),
                alerts=("OrdersOpenTooLong",),
                min=0,
            ),
            Panel(
                title="Order fill ratio",
                description="Filled share of the orders seen done (closed or cancelled), p50 and p99 per exchange: a quoting engine whose orders never fill is quoting too far away.",
                unit="percentunit",
                queries=quantile_queries(
                    "trading_order_filled_ratio", EXCHANGE, "exchange", "{{exchange}}", (0.5, 0.99)
                ),
                min=0,
                max=1,
            ),
            Panel(
                title="Market order slippage",
                description="Market orders' fill price against the last price the engine saw before sending, p50 and p99 per exchange and direction (adverse: worse than seen).",
                unit="percentunit",
                queries=quantile_queries(
                    "trading_order_slippage_ratio",
                    EXCHANGE,
                    "exchange, direction",
                    "{{exchange}} {{direction}}",
                    (0.5, 0.99),
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
    rows=(overview(), red_row(), orders(), rate_limits(), market_data(), account(), runtime()),
    alert_components=("exchange",),
)
