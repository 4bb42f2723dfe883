"""Market-data freshness on REST: how old the data an exchange returned was.

When fetch_ticker, fetch_tickers, fetch_order_book, fetch_trades or fetch_ohlcv
returns, the age of its data is the engine's clock (tickscope.shim.clock.now)
minus the exchange's own timestamp in the result, at the moment the response
arrived. A cache in front of the API, a lagging matching engine or a stale
replica shows up as an age that grows. The gauge

    exchange.marketdata.age{exchange, method, symbol}   (s)
    -> exchange_marketdata_age_seconds on /metrics

holds the newest call's figure per series (it is not re-computed at collection:
an engine that stops polling keeps its last figure; the websocket gauge,
exchange_ws_update_age_seconds, grows instead). What "its timestamp" is, by method:

- fetch_ticker: the ticker's timestamp (Binance: the 24 h window's closeTime);
- fetch_tickers(symbols): each requested symbol's ticker; fetch_tickers() with
  no symbols: one series without `symbol`, the newest ticker's age (how old the
  answer is; a whole-market answer would otherwise fill the symbol limit);
- fetch_order_book: the book's timestamp, where the exchange sends one (Binance
  spot's REST depth has none: no series; its futures' has);
- fetch_trades: the newest trade's time (on a quiet market that grows while the
  data is fresh: read it with the market's activity in mind);
- fetch_ohlcv: how long ago the newest candle ended (its open time plus the
  timeframe), 0 while it is still open (an exchange answers with the current,
  unfinished candle).

The age is measured against the engine's clock, so a skewed exchange clock adds
to it: a server clock 2 s behind makes fresh data look 2 s old, one ahead
makes it negative. exchange_marketdata_age_seconds + exchange_clock_skew_seconds
is the age by the exchange's own clock.

Symbols: at most `max_symbols` per exchange (TICKSCOPE_SHIM_MAX_SYMBOLS, default
100) get a `symbol` label; data of any other symbol goes to one series per
(exchange, method) without `symbol` and with otel.metric.overflow=true (the
newest such figure). OpenTelemetry API only.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry.metrics import CallbackOptions, Meter, Observation

from tickscope.shim import settings
from tickscope.shim.redact import safe_text

__all__ = ["METHODS", "AgeStore", "hook_for", "register", "reset", "store", "timeframe_seconds"]

Hook = Callable[[str, Any, Mapping[str, Any], float, float], None]

OVERFLOW = "otel.metric.overflow"
# Timestamps before 2001-09-09 (1e12 ms) or after 2286 are not exchange clocks.
_MIN_MS = 1e12
_MAX_MS = 1e13


class AgeStore:
    """The newest age per (exchange, method, symbol); read at collection."""

    def __init__(self, max_symbols: int | None = None) -> None:
        self.max_symbols = (
            settings.env_int(settings.MAX_SYMBOLS_ENV, settings.DEFAULT_MAX_SYMBOLS)
            if max_symbols is None
            else max_symbols
        )
        self._lock = threading.Lock()
        # (exchange, method, symbol or None, overflow) -> seconds
        self.ages: dict[tuple[str, str, str | None, bool], float] = {}
        self._symbols: dict[str, set[str]] = {}

    def _key(
        self, exchange: str, method: str, symbol: str | None
    ) -> tuple[str, str, str | None, bool]:
        if symbol is None:
            return (exchange, method, None, False)
        admitted = self._symbols.get(exchange)
        if admitted is not None and symbol in admitted:
            return (exchange, method, symbol, False)
        with self._lock:
            admitted = self._symbols.setdefault(exchange, set())
            if symbol in admitted or len(admitted) < self.max_symbols:
                admitted.add(symbol)
                return (exchange, method, symbol, False)
        return (exchange, method, None, True)

    def record(self, exchange: str, method: str, symbol: str | None, age: float) -> None:
        if math.isfinite(age):
            self.ages[self._key(exchange, method, symbol)] = age

    def observations(self) -> list[Observation]:
        found = []
        for (exchange, method, symbol, overflow), age in list(self.ages.items()):
            attributes: dict[str, str | bool] = {"exchange": exchange, "method": method}
            if symbol is not None:
                attributes["symbol"] = symbol
            if overflow:
                attributes[OVERFLOW] = True
            found.append(Observation(age, attributes))
        return found

    def clear(self) -> None:
        with self._lock:
            self.ages.clear()
            self._symbols.clear()


store = AgeStore()


def reset(max_symbols: int | None = None) -> None:
    """Forget every figure and admitted symbol; a new symbol limit (tests)."""
    global store
    store = AgeStore(max_symbols)


def _ms(value: Any) -> float | None:
    """An exchange timestamp in milliseconds, or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not _MIN_MS <= value <= _MAX_MS:
        return None
    return float(value)


def _symbol(result: Mapping[str, Any], arguments: Mapping[str, Any]) -> str | None:
    return safe_text(arguments.get("symbol")) or safe_text(result.get("symbol"))


def _stamped(method: str) -> Hook:
    """For a result that carries its own timestamp and symbol: a ticker, an order book."""

    def hook(
        exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
    ) -> None:
        if not isinstance(result, Mapping):
            return
        stamp = _ms(result.get("timestamp"))
        if stamp is not None:
            store.record(exchange, method, _symbol(result, arguments), ended - stamp / 1000)

    return hook


def _tickers(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    if not isinstance(result, Mapping):
        return
    requested = arguments.get("symbols")
    if isinstance(requested, Sequence) and not isinstance(requested, str) and requested:
        for name in requested:
            ticker = result.get(name) if isinstance(name, str) else None
            if not isinstance(ticker, Mapping):
                continue
            stamp = _ms(ticker.get("timestamp"))
            symbol = safe_text(name)
            if stamp is not None and symbol is not None:
                store.record(exchange, "fetch_tickers", symbol, ended - stamp / 1000)
        return
    newest = None
    for ticker in result.values():
        if isinstance(ticker, Mapping):
            stamp = _ms(ticker.get("timestamp"))
            if stamp is not None and (newest is None or stamp > newest):
                newest = stamp
    if newest is not None:
        store.record(exchange, "fetch_tickers", None, ended - newest / 1000)


def _trades(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    # ccxt sorts trades by time, oldest first.
    if not isinstance(result, Sequence) or not result or not isinstance(result[-1], Mapping):
        return
    newest = result[-1]
    stamp = _ms(newest.get("timestamp"))
    if stamp is not None:
        store.record(exchange, "fetch_trades", _symbol(newest, arguments), ended - stamp / 1000)


def _ohlcv(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    if not isinstance(result, Sequence) or not result:
        return
    candle = result[-1]
    if not isinstance(candle, Sequence) or not candle:
        return
    stamp = _ms(candle[0])
    timeframe = arguments.get("timeframe")
    duration = timeframe_seconds("1m" if timeframe is None else timeframe)
    if stamp is None or duration is None:
        return
    symbol = safe_text(arguments.get("symbol"))
    store.record(exchange, "fetch_ohlcv", symbol, max(0.0, ended - stamp / 1000 - duration))


# ccxt's Exchange.parse_timeframe: "1m" -> 60 ("M" is 30 days, "y" 365).
_SCALES = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000}


def timeframe_seconds(timeframe: Any) -> int | None:
    """A ccxt timeframe ("1m", "4h", "1d") in seconds; None if it is none."""
    if not isinstance(timeframe, str) or not 2 <= len(timeframe) <= 8:
        return None
    scale = _SCALES.get(timeframe[-1])
    amount = timeframe[:-1]
    if scale is None or not amount.isdigit() or int(amount) <= 0:
        return None
    return int(amount) * scale


METHODS: dict[str, Hook] = {
    "fetch_ticker": _stamped("fetch_ticker"),
    "fetch_tickers": _tickers,
    "fetch_order_book": _stamped("fetch_order_book"),
    "fetch_trades": _trades,
    "fetch_ohlcv": _ohlcv,
}


def hook_for(method: str) -> Hook | None:
    """What to do with the result of a call of `method`, if anything."""
    return METHODS.get(method)


def _observe(_: CallbackOptions) -> Iterable[Observation]:
    return store.observations()


def register(meter: Meter) -> None:
    meter.create_observable_gauge(
        "exchange.marketdata.age",
        [_observe],
        unit="s",
        description="Age of the market data an exchange returned over REST (the engine's "
        "clock at the response minus the data's timestamp), by method and symbol.",
    )
