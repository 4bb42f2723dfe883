"""Trading metrics derived from the shim's ccxt spans.

A span counts when it carries `exchange.id` (the shim sets it on every ccxt call);
everything else the engine sends is left to the span metrics.

- exchange_api_errors_total{exchange,method,error_type}: spans with status ERROR,
  error_type from `error.type` (the ccxt exception class), "unknown" without one.
- exchange_rate_limit_hits_total{exchange}: calls refused for rate limiting: an
  error.type in `rate_limit_error_types`, or HTTP 429/418. Served at 0 from an
  exchange's first call, so the first hit shows up in increase().
- exchange_timestamp_rejections_total{exchange,method}: calls the exchange refused
  for their timestamp (a clock off by more than the receive window, or a nonce
  out of order): an error.type in `timestamp_error_types`, by default
  InvalidNonce, ccxt's class for Binance's -1021 ("Timestamp for this request
  is outside of the recvWindow", "... 1000ms ahead of the server's time") on
  spot and USD-M/COIN-M futures, Bybit's 10002, OKX's 50102 and KuCoin's 400002.
  (ccxt maps -1021 on Binance's portfolio-margin API, papi, to BadRequest, which
  says nothing specific enough to count here.) Served at 0 for every method an
  exchange has called, from its first call, so the first rejection shows up in
  increase(); these are counted in exchange_api_errors_total as well.
- exchange_rate_limit_used_ratio{exchange}: trading.ratelimit.used / .limit of
  the newest span that carries both (headers such as Binance's used weight);
  dropped after `rate_limit_ratio_ttl` without news, so a burst an hour ago does
  not keep an alert firing.
- trading_orders_total{exchange,side,type,outcome} and the histogram
  trading_order_latency_seconds{exchange,outcome}: for ccxt methods matching
  `order_methods`; outcome is accepted (no error), rejected (the exchange refused
  the order: error.type in `rejected_error_types`) or error (anything else: the
  order's fate is unknown, e.g. a timeout).
"""

from __future__ import annotations

import math
import re
import time
from typing import Any, NamedTuple

from prometheus_client import CollectorRegistry, Counter
from pydantic import Field

from tickscope.connectors.spanmetrics import DEFAULT_BUCKETS
from tickscope.core.configtypes import Buckets, Duration, Regex, StrictModel
from tickscope.exposition.families import (
    CounterFamily,
    GaugeFamily,
    HistogramFamily,
    Pending,
    cut_label_value,
    fill_exemplars,
    take_exemplar,
)
from tickscope.exposition.text import Lines

__all__ = ["TradingConfig", "TradingMetrics"]

# ccxt's exceptions for an order the exchange refused (ccxt/base/errors.py).
DEFAULT_REJECTED = (
    "InvalidOrder",
    "InsufficientFunds",
    "OrderNotFillable",
    "OrderImmediatelyFillable",
    "DuplicateOrderId",
    "ContractUnavailable",
    "BadSymbol",
    "BadRequest",
    "ArgumentsRequired",
    "AccountSuspended",
    "PermissionDenied",
    "MarketClosed",
    "NotSupported",
)
DEFAULT_RATE_LIMIT = ("RateLimitExceeded", "DDoSProtection")
DEFAULT_TIMESTAMP = ("InvalidNonce",)
# (exchange, method) pairs kept for serving exchange_timestamp_rejections_total at 0:
# method names are few; this bounds a stream of made-up ones.
MAX_METHODS_SEEN = 4096
RATE_LIMIT_HTTP = frozenset({"429", "418"})

# What `plan` reads of an order's or a failed call's span.
SPAN_ATTRIBUTES = frozenset(
    {
        "exchange.id",
        "ccxt.method",
        "error.type",
        "trading.order.side",
        "trading.order.type",
        "http.response.status_code",
    }
)
# What `rate_limit_seen` holds of an exchange's newest span with rate-limit headers.
RATE_LIMIT_ATTRIBUTES = frozenset({"trading.ratelimit.used", "trading.ratelimit.limit"})
# A rate-limit header value longer than this is no number an exchange sends (Binance's
# used weight is 1-5 digits): not parsed, so a hostile value costs nothing.
MAX_NUMBER_TEXT = 64


class Plan(NamedTuple):
    """The series one span shape counts into (see TradingMetrics.plan)."""

    exchange: str
    error_key: tuple[str, str, str] | None  # exchange_api_errors_total
    rate_limit_hit: bool  # exchange_rate_limit_hits_total
    order_key: tuple[str, str, str, str] | None  # trading_orders_total
    latency_key: tuple[str, str] | None  # trading_order_latency_seconds
    timestamp_key: tuple[str, str] | None = None  # exchange_timestamp_rejections_total


class TradingConfig(StrictModel):
    enabled: bool = Field(True, description="Derive trading metrics from ccxt spans.")
    order_methods: Regex = Field(
        # The project's own pattern, so re (linear on it: one optional group, no nesting)
        # rather than RE2, which the default config then never loads (configtypes.Pattern).
        re.compile(r"^create_(\w+_)?orders?$"),
        description="ccxt methods (ccxt.method) that place orders.",
    )
    rejected_error_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_REJECTED),
        description="error.type values that mean the exchange refused an order.",
    )
    rate_limit_error_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_RATE_LIMIT),
        description="error.type values that count as rate-limit hits (besides HTTP 429/418).",
    )
    timestamp_error_types: list[str] = Field(
        default_factory=lambda: list(DEFAULT_TIMESTAMP),
        description="error.type values that mean the exchange refused a call for its "
        "timestamp or nonce (Binance's -1021 is InvalidNonce in ccxt), counted in "
        "exchange_timestamp_rejections_total.",
    )
    rate_limit_ratio_ttl: Duration = Field(
        120.0, description="exchange_rate_limit_used_ratio is dropped after this long without news."
    )
    order_latency_buckets: Buckets = Field(
        default_factory=lambda: list(DEFAULT_BUCKETS),
        description="Bucket bounds of trading_order_latency_seconds, in seconds, increasing.",
    )
    max_series: int = Field(
        1000, ge=1, description="Cardinality limit per trading metric (overflow as for spans)."
    )
    series_expiry: Duration = Field(
        900.0, description="Label sets not updated for this long are dropped."
    )
    max_label_value_length: int = Field(
        128,
        ge=8,
        le=65536,
        description="Label values (exchange, method, error_type, side, type) longer than "
        'this many characters are cut to it, ending in "..."; such spans are counted in '
        'tickscope_trading_truncated_spans_total{reason="label_value_length"}.',
    )
    max_attributes_per_span: int = Field(
        128,
        ge=1,
        le=65536,
        description="Only a span's first this many attributes are read (the OTel SDKs' "
        "default attribute count limit); spans with more are counted in "
        'tickscope_trading_truncated_spans_total{reason="attribute_count"}.',
    )


class TradingMetrics:
    def __init__(self, config: TradingConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self.registry = registry
        truncated = Counter(
            "tickscope_trading_truncated_spans_total",
            "Exchange spans counted with a label value cut to trading.max_label_value_length "
            "(reason=label_value_length) or with attributes past "
            "trading.max_attributes_per_span left unread (reason=attribute_count).",
            ["reason"],
            registry=registry,
        )
        self.truncated_length = truncated.labels("label_value_length")
        self.truncated_attributes = truncated.labels("attribute_count")
        self.max_label_value_length = config.max_label_value_length
        self.max_attributes = config.max_attributes_per_span
        overflow = Counter(
            "tickscope_trading_overflow_total",
            "Spans counted in an overflow series because a trading metric hit its limit.",
            ["metric"],
            registry=registry,
        )
        limit = config.max_series

        def family_overflow(name: str) -> Any:
            child = overflow.labels(name)
            return child.inc

        self.errors = CounterFamily(
            "exchange_api_errors_total",
            "Exchange API calls that failed, by ccxt method and ccxt exception class.",
            ("exchange", "method", "error_type"),
            limit,
            family_overflow("exchange_api_errors_total"),
        )
        self.rate_limit_hits = CounterFamily(
            "exchange_rate_limit_hits_total",
            "Exchange API calls refused for rate limiting (429/418 or a rate-limit exception).",
            ("exchange",),
            limit,
            family_overflow("exchange_rate_limit_hits_total"),
        )
        self.timestamp_rejections = CounterFamily(
            "exchange_timestamp_rejections_total",
            "Exchange API calls refused for their timestamp or nonce (clock skew past the "
            "receive window), by ccxt method.",
            ("exchange", "method"),
            limit,
            family_overflow("exchange_timestamp_rejections_total"),
        )
        self.used_ratio = GaugeFamily(
            "exchange_rate_limit_used_ratio",
            "Share of the exchange's rate limit in use, from its response headers.",
            ("exchange",),
            limit,
            family_overflow("exchange_rate_limit_used_ratio"),
        )
        self.orders = CounterFamily(
            "trading_orders_total",
            "Orders placed, by side, type and outcome (accepted, rejected, error).",
            ("exchange", "side", "type", "outcome"),
            limit,
            family_overflow("trading_orders_total"),
        )
        self.order_latency = HistogramFamily(
            "trading_order_latency_seconds",
            "Time from sending an order to the exchange's answer, in seconds.",
            ("exchange", "outcome"),
            limit,
            config.order_latency_buckets,
            family_overflow("trading_order_latency_seconds"),
        )
        self._families = (
            self.orders,
            self.order_latency,
            self.rate_limit_hits,
            self.timestamp_rejections,
            self.errors,
            self.used_ratio,
        )
        self._rejected = frozenset(config.rejected_error_types)
        self._rate_limited = frozenset(config.rate_limit_error_types)
        self._timestamp_errors = frozenset(config.timestamp_error_types)
        # exchange -> the methods it has called (label values cut to the limit), for
        # serving exchange_timestamp_rejections_total at 0; `plan` fills it, once per
        # span shape, and end_batch serves the methods of the batch's exchanges.
        self.methods_seen: dict[str, set[str]] = {}
        self._methods_seen_count = 0
        self._order_method = config.order_methods.search
        self._last_expiry = 0.0
        self._touched: list[Pending] = []
        self._expiry_every = min(10.0, config.rate_limit_ratio_ttl / 10, config.series_expiry / 10)
        # exchange -> attributes of its newest span with rate-limit headers in this
        # batch (SpanStream fills it); the ratio is computed once per batch.
        self.rate_limit_seen: dict[str, dict[str, str]] = {}
        # Exchanges with any call in this batch: their rate-limit counter is served
        # from 0 before the first hit, so that increase() sees the first hit (a
        # counter that appears at 1 looks to Prometheus like it was always 1).
        self.exchanges_seen: set[str] = set()
        self.order_methods: dict[str, bool] = {}

    @property
    def wanted_attributes(self) -> frozenset[str]:
        """The span attributes `plan` reads."""
        return SPAN_ATTRIBUTES

    def is_order(self, method: str) -> bool:
        flag = self.order_methods.get(method)
        if flag is None:
            if len(self.order_methods) > 1024:  # method names are few; this bounds abuse
                self.order_methods.clear()
            flag = self.order_methods[method] = self._order_method(method) is not None
        return flag

    def cut_labels(self, plan: Plan) -> tuple[Plan, bool]:
        """`plan` with every label value cut to the length limit, and whether one was.
        SpanStream calls it once per span shape, after `plan` classified the span on
        the values as sent (a cut error.type would no longer match the configured lists)."""
        limit = self.max_label_value_length
        exchange, error_key, rate_limit_hit, order_key, latency_key, timestamp_key = plan
        values = (exchange, *(error_key or ()), *(order_key or ()), *(timestamp_key or ()))
        if all(len(value) <= limit for value in values):
            return plan, False

        def cut(key: tuple[str, ...] | None) -> Any:
            return None if key is None else tuple(cut_label_value(v, limit) for v in key)

        return (
            Plan(
                cut_label_value(exchange, limit),
                cut(error_key),
                rate_limit_hit,
                cut(order_key),
                cut(latency_key),
                cut(timestamp_key),
            ),
            True,
        )

    def plan(self, attrs: dict[str, str], status: int) -> Plan | None:
        """What `record` does with an exchange span of these attributes (keys ->
        text values) and status code; None when nothing (a successful call that
        places no order). SpanStream makes a plan once per span shape."""
        exchange = attrs["exchange.id"]
        method = attrs.get("ccxt.method", "")
        self._saw_method(exchange, method)
        failed = status == 2
        error_type = attrs.get("error.type", "") if failed else ""
        error_key = (exchange, method, error_type or "unknown") if failed else None
        rate_limit_hit = failed and (
            error_type in self._rate_limited
            or attrs.get("http.response.status_code") in RATE_LIMIT_HTTP
        )
        timestamp_key = (
            (exchange, method) if failed and error_type in self._timestamp_errors else None
        )
        order_key = latency_key = None
        if self.is_order(method):
            if not failed:
                outcome = "accepted"
            elif error_type in self._rejected:
                outcome = "rejected"
            else:
                outcome = "error"
            side = attrs.get("trading.order.side", "")
            order_key = (exchange, side, attrs.get("trading.order.type", ""), outcome)
            latency_key = (exchange, outcome)
        if error_key is None and order_key is None:
            return None
        return Plan(exchange, error_key, rate_limit_hit, order_key, latency_key, timestamp_key)

    def _saw_method(self, exchange: str, method: str) -> None:
        """Note that `exchange` called `method` (values as SpanStream keys the
        exchange: cut to the label length limit)."""
        limit = self.max_label_value_length
        exchange = cut_label_value(exchange, limit)
        method = cut_label_value(method, limit)
        methods = self.methods_seen.get(exchange)
        if methods is not None and method in methods:
            return
        if self._methods_seen_count >= MAX_METHODS_SEEN:
            self.methods_seen.clear()
            self._methods_seen_count = 0
        self.methods_seen.setdefault(exchange, set()).add(method)
        self._methods_seen_count += 1

    def record(self, plan: Plan, duration: float, span: Any, now: float) -> None:
        """Count one span as planned (SpanStream hands rate-limit headers to
        `rate_limit_seen` separately, once per batch)."""
        exchange, error_key, rate_limit_hit, order_key, latency_key, timestamp_key = plan
        if error_key is not None:
            self.errors.inc(error_key, now)
            if rate_limit_hit:
                self.rate_limit_hits.inc((exchange,), now)
            if timestamp_key is not None:
                self.timestamp_rejections.inc(timestamp_key, now)
        if order_key is not None and latency_key is not None:
            self.orders.inc(order_key, now)
            slot, index = self.order_latency.observe(latency_key, duration, now)
            if take_exemplar(slot, index, now):
                self._touched.append((slot, index, span, duration))

    def end_batch(self, now: float) -> None:
        # Every piece of per-batch state is reset whatever happens: state left over
        # from a batch that raised would make every later batch raise too (issue 11,
        # defect 6: 12,061 of 12,061 batches), and it grows.
        try:
            if self.exchanges_seen:
                hits = self.rate_limit_hits
                rejections = self.timestamp_rejections
                for exchange in self.exchanges_seen:
                    key = (exchange,)
                    # Past the series limit a 0 would only count as overflow, batch after batch.
                    if hits.find(key) is not None or len(hits) < hits.max_series:
                        hits.inc(key, now, 0.0)
                    for method in self.methods_seen.get(exchange, ()):
                        pair = (exchange, method)
                        if (
                            rejections.find(pair) is not None
                            or len(rejections) < rejections.max_series
                        ):
                            rejections.inc(pair, now, 0.0)
            for exchange, attrs in self.rate_limit_seen.items():
                ratio = _ratio(
                    attrs.get("trading.ratelimit.used"), attrs.get("trading.ratelimit.limit")
                )
                if ratio is not None:
                    self.used_ratio.set((exchange,), ratio, now)
            if self._touched:
                fill_exemplars(self._touched)
        finally:
            self.exchanges_seen.clear()
            self.rate_limit_seen.clear()
            self._touched.clear()
        self.maybe_expire(now)

    def maybe_expire(self, now: float) -> None:
        # Also called at scrape time, so that a ratio goes stale without traffic.
        if now - self._last_expiry < self._expiry_every:
            return
        self._last_expiry = now
        self.used_ratio.expire(now - self.config.rate_limit_ratio_ttl)
        horizon = now - self.config.series_expiry
        for family in (
            self.orders,
            self.order_latency,
            self.rate_limit_hits,
            self.timestamp_rejections,
            self.errors,
        ):
            family.expire(horizon)

    def family_names(self) -> list[str]:
        return [name for family in self._families for name in family.sample_names()]

    def render(self, out: Lines, openmetrics: bool, names: frozenset[str] | None) -> None:
        self.maybe_expire(time.monotonic())
        for family in self._families:
            family.render(out, openmetrics, names)


def _ratio(used: str | None, limit: str | None) -> float | None:
    """used / limit when both are finite numbers, used >= 0 and limit > 0; else None
    (a span may carry either header alone, or text that is no number)."""
    if used is None or limit is None or len(used) > MAX_NUMBER_TEXT or len(limit) > MAX_NUMBER_TEXT:
        return None
    try:
        used_value = float(used)
        limit_value = float(limit)
    except ValueError:
        return None
    if not (math.isfinite(used_value) and math.isfinite(limit_value)):
        return None
    if used_value < 0 or limit_value <= 0:
        return None
    ratio = used_value / limit_value
    return ratio if math.isfinite(ratio) else None
