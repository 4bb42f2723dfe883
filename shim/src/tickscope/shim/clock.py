"""Clock skew: each exchange's clock minus the engine's, estimated from its responses.

Every response says, one way or another, what time the exchange's clock read
while the request was in flight. With the engine's clock read when the call
started (t0) and when the response arrived (t1), the exchange's reading s was
taken at some engine instant in [t0, t1], so the offset (exchange - engine) lies
in [s_low - t1, s_high - t0], where [s_low, s_high] is what the reading allows:

- the HTTP `Date` header (every response, errors included): whole seconds,
  truncated (RFC 9110), so s is in [D, D + 1): the offset to ±(0.5 s + half the
  round trip); its midpoint is D + 0.5 - (t0 + t1) / 2, the request's midpoint;
- the server time fetch_time() returns (milliseconds): s in [T, T + 1 ms): to
  ±(half the round trip + 0.5 ms);
- an order's time in the answer to create_order (and helpers such as
  create_market_buy_order) or cancel_order: Binance's transactTime, ccxt's
  lastUpdateTimestamp, else for a new order its timestamp; milliseconds, as
  precise as the server time. Order times read later (fetch_order,
  fetch_open_orders) are history, not the present: never used.

An exchange's estimate comes from its best source with a sample in the last
RECENT_SECONDS (server time, then order times, then Date headers), else from the
one heard from last. Within a source, the newest samples are intersected while
they agree (several Date headers whose second boundaries fall at different
points of their requests narrow ±0.5 s down towards the round trip); a sample
that does not overlap the newer ones (the clock was stepped) ends the
intersection there. The gauges show the interval's midpoint and half-width:

- exchange.clock.skew{exchange} (s): exchange_clock_skew_seconds on /metrics,
  positive when the exchange's clock is ahead of the engine's;
- exchange.clock.skew.uncertainty{exchange} (s): the half-width,
  exchange_clock_skew_uncertainty_seconds.

The engine's clock is `now()` (time.time; tests set another with
`set_time_source`). OpenTelemetry API only.
"""

from __future__ import annotations

import email.utils
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from typing import Any, NamedTuple

from opentelemetry.metrics import CallbackOptions, Meter, Observation

__all__ = [
    "DATE",
    "ORDER",
    "SERVER_TIME",
    "SkewEstimator",
    "estimator",
    "note_date",
    "note_order",
    "note_server_time",
    "now",
    "register",
    "reset",
    "set_time_source",
]

SERVER_TIME = "server_time"
ORDER = "order"
DATE = "date"
PRECEDENCE = (SERVER_TIME, ORDER, DATE)
# A source counts as available while its newest sample is younger than this.
RECENT_SECONDS = 300.0
SAMPLES = 32  # kept per exchange and source
# An offset beyond a day is no clock error but a reading that means something else.
MAX_OFFSET_SECONDS = 86_400.0
MAX_EXCHANGES = 256

_source: Callable[[], float] = time.time


def now() -> float:
    """The engine's clock, in Unix seconds, as the shim's metrics read it."""
    return _source()


def set_time_source(source: Callable[[], float] | None) -> Callable[[], float]:
    """Read the engine's clock from `source` (None: time.time); returns the previous
    one. For tests, which need exact values."""
    global _source
    previous = _source
    _source = source or time.time
    return previous


class Sample(NamedTuple):
    low: float  # the offset is at least this
    high: float  # and at most this
    at: float  # engine time the sample was taken


class Estimate(NamedTuple):
    skew: float
    uncertainty: float
    source: str


class SkewEstimator:
    """Samples per exchange and source; estimates computed when read (at metric
    collection), so that a response costs one append."""

    def __init__(self, recent: float = RECENT_SECONDS, samples: int = SAMPLES) -> None:
        self.recent = recent
        self.samples = samples
        self._lock = threading.Lock()
        self._by_exchange: dict[str, dict[str, deque[tuple[float, float, float]]]] = {}

    def add(self, exchange: str, source: str, low: float, high: float, at: float) -> None:
        if not (math.isfinite(low) and math.isfinite(high)) or high < low:
            return
        if abs(low) > MAX_OFFSET_SECONDS or abs(high) > MAX_OFFSET_SECONDS:
            return
        sources = self._by_exchange.get(exchange)
        if sources is None:
            with self._lock:
                if len(self._by_exchange) >= MAX_EXCHANGES and exchange not in self._by_exchange:
                    return
                sources = self._by_exchange.setdefault(exchange, {})
        kept = sources.get(source)
        if kept is None:
            kept = sources.setdefault(source, deque(maxlen=self.samples))
        kept.append((low, high, at))  # a Sample, as a plain tuple: cheaper to make

    def estimate(self, exchange: str, at: float | None = None) -> Estimate | None:
        sources = self._by_exchange.get(exchange)
        if not sources:
            return None
        at = now() if at is None else at
        newest: tuple[float, str] | None = None
        chosen: str | None = None
        held = {
            name: [Sample(*sample) for sample in list(kept)]
            for name, kept in list(sources.items())
            if kept
        }
        for name in PRECEDENCE:
            kept_samples = held.get(name)
            if not kept_samples:
                continue
            last = kept_samples[-1].at
            if at - last <= self.recent:
                chosen = name
                break
            if newest is None or last > newest[0]:
                newest = (last, name)
        if chosen is None:
            if newest is None:
                return None
            chosen = newest[1]
        low, high = _intersection(held[chosen])
        return Estimate((low + high) / 2, (high - low) / 2, chosen)

    def estimates(self, at: float | None = None) -> dict[str, Estimate]:
        at = now() if at is None else at
        found = {}
        for exchange in list(self._by_exchange):
            estimate = self.estimate(exchange, at)
            if estimate is not None:
                found[exchange] = estimate
        return found

    def clear(self) -> None:
        with self._lock:
            self._by_exchange.clear()


def _intersection(samples: list[Sample]) -> tuple[float, float]:
    """The newest samples' common interval, going back while they overlap."""
    low, high = samples[-1].low, samples[-1].high
    for sample in reversed(samples[:-1]):
        new_low, new_high = max(low, sample.low), min(high, sample.high)
        if new_low > new_high:
            break  # the clock was stepped between them: older samples say another offset
        low, high = new_low, new_high
    return low, high


estimator = SkewEstimator()

# A Date header changes once a second: the last one parsed is kept.
_last_date: tuple[str, float | None] = ("", None)


def _date_seconds(value: str) -> float | None:
    global _last_date
    text, seconds = _last_date
    if value == text:
        return seconds
    try:
        parsed = email.utils.parsedate_to_datetime(value)
        seconds = parsed.timestamp() if parsed.tzinfo is not None else None
    except (TypeError, ValueError, IndexError, OverflowError):
        seconds = None
    _last_date = (value, seconds)
    return seconds


def note_date(exchange: str, headers: Any, started: float, received: float) -> None:
    """A response's Date header (any response: errors too), for a request sent no
    earlier than `started` and answered at `received` (engine seconds)."""
    getter = getattr(headers, "get", None)
    if getter is None:
        return
    value = getter("Date")
    if not isinstance(value, str) or len(value) > 64:
        return
    seconds = _date_seconds(value)
    if seconds is None:
        return
    estimator.add(exchange, DATE, seconds - received, seconds + 1.0 - started, received)


def _note_ms(exchange: str, source: str, value: Any, started: float, ended: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return
    seconds = value / 1000.0
    estimator.add(exchange, source, seconds - ended, seconds + 0.001 - started, ended)


def note_server_time(exchange: str, milliseconds: Any, started: float, ended: float) -> None:
    """What fetch_time() returned, for a call from `started` to `ended`."""
    _note_ms(exchange, SERVER_TIME, milliseconds, started, ended)


def note_order(
    exchange: str, order: Any, started: float, ended: float, created: bool = True
) -> None:
    """The time the exchange stamped on an order it just placed (`created`) or
    cancelled: lastUpdateTimestamp (Binance's transactTime), else, for a new order,
    its timestamp."""
    if not isinstance(order, Mapping):
        return
    stamp = order.get("lastUpdateTimestamp")
    if stamp is None and created:
        stamp = order.get("timestamp")
    _note_ms(exchange, ORDER, stamp, started, ended)


def reset() -> None:
    """Forget every sample (tests)."""
    estimator.clear()


def _observe_skew(_: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(e.skew, {"exchange": exchange})
        for exchange, e in sorted(estimator.estimates().items())
    ]


def _observe_uncertainty(_: CallbackOptions) -> Iterable[Observation]:
    return [
        Observation(e.uncertainty, {"exchange": exchange})
        for exchange, e in sorted(estimator.estimates().items())
    ]


def register(meter: Meter) -> None:
    """The skew gauges, on `meter` (once per meter provider: see tickscope.shim.ccxt)."""
    meter.create_observable_gauge(
        "exchange.clock.skew",
        [_observe_skew],
        unit="s",
        description="The exchange's clock minus the engine's, estimated from its responses "
        "(server time, order times, Date headers).",
    )
    meter.create_observable_gauge(
        "exchange.clock.skew.uncertainty",
        [_observe_uncertainty],
        unit="s",
        description="Half-width of the interval the exchange clock skew is known to lie in.",
    )
