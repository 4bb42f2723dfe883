"""Metrics for ccxt.pro websockets: what the engine's watch_* calls deliver.

A websocket stream updates far more often than an engine calls a REST method,
so its updates become metrics, not spans. `instrument_pro(exchange)` wraps, on
that one exchange instance, every `watch_*` method the exchange's `has` map
lists (watch_ticker, watch_tickers, watch_order_book, watch_trades,
watch_ohlcv, watch_orders, watch_balance, watch_positions, watch_my_trades,
...), its `un_watch_*` methods, `close` and the `on_connected` hook ccxt.pro's
websocket clients call. Scope `tickscope.shim.ccxt_pro`; the names on the
sidecar's /metrics are those after the arrow:

- `exchange.ws.updates` {exchange, method, symbol} -> exchange_ws_updates_total:
  one per update a watch_* call returned to the engine (watch_tickers and the
  other many-symbol watches: one per symbol in the result). Calls made inside a
  watch (binance's watch_ticker calls watch_tickers) count once, as the
  engine's call.
- `exchange.ws.update.age` {exchange, method, symbol} -> exchange_ws_update_age_seconds:
  at each collection, now minus the newest update's exchange timestamp (the
  result's `timestamp`, an order's `lastUpdateTimestamp`), or its arrival where
  ccxt gives none (OHLCV candles carry their open time, not the update's). A
  stream that stops keeps its last timestamp, so its age grows; a stream the
  engine ends (un_watch_*, close) is no longer reported. The exchange's clock
  is in it: a server clock ahead of the engine's makes ages smaller, even
  negative (exchange.clock.skew measures that).
- `exchange.ws.update.gap` {exchange, method, symbol} -> exchange_ws_update_gap_seconds:
  the longest time between two consecutive updates of a stream (arrival,
  monotonic clock), one observation per stream per `gap_window` (1 s): every
  gap of 1 s or more is an observation of its own, shorter ones are folded into
  the longest of their window. Recording every gap (`gap_window=0`) costs an
  SDK histogram record per update: about 20 µs in bench/bench_ws.py, a fifth
  of what ccxt.pro itself spends on an update, against about 4 µs for all of
  this with the window.
- `exchange.ws.reconnects` {exchange} -> exchange_ws_reconnects_total: ccxt.pro
  reconnects by making a new Client for the URL when the engine calls watch_*
  again after a dropped connection; each connection established to a URL this
  exchange had already connected to is one reconnect (0 from the first connect).
- `exchange.ws.errors` {exchange, method, error_type} -> exchange_ws_errors_total:
  exceptions raised out of a watch_* call to the engine, by class (a dropped
  connection is a NetworkError to every pending watch). Never the message.

Symbols beyond `max_symbols` per exchange id (TICKSCOPE_SHIM_WS_MAX_SYMBOLS,
default 100), first come first served, are recorded without `symbol` and with
`otel.metric.overflow=true`. Updates are counted in plain integers on the
engine's side and reported by observable instruments at collection, so an
update costs a dictionary lookup and a few attribute writes, not an SDK call.

OpenTelemetry API only, like the rest of the instrumentation.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Counter, Histogram, MeterProvider, Observation

from tickscope.shim import settings
from tickscope.shim.redact import safe_text
from tickscope.shim.version import __version__

__all__ = [
    "DEFAULT_GAP_WINDOW",
    "DEFAULT_MAX_SYMBOLS",
    "GAP_BUCKETS",
    "INSTRUMENTATION_NAME",
    "MAX_SYMBOLS_ENV",
    "instrument_pro",
    "is_pro",
    "is_pro_instrumented",
    "uninstrument_pro",
    "watch_methods",
]

INSTRUMENTATION_NAME = "tickscope.shim.ccxt_pro"
MAX_SYMBOLS_ENV = "TICKSCOPE_SHIM_WS_MAX_SYMBOLS"
DEFAULT_MAX_SYMBOLS = 100
DEFAULT_GAP_WINDOW = 1.0
GAP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
OVERFLOW_ATTRIBUTE = "otel.metric.overflow"
_STATE_ATTR = "_tickscope_pro_instrumentation"
_MISSING = object()
_MAX_URLS = 1024  # connected URLs remembered per exchange (listen keys make new ones)

# A watch_* call of the engine is running in this context: the watch_* calls it
# makes itself (watch_ticker -> watch_tickers) are not counted again.
_IN_WATCH: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tickscope_in_ccxt_watch", default=False
)


def watch_methods(exchange: Any) -> dict[str, list[str]]:
    """snake_case watch_* / un_watch_* method -> every attribute name it is reachable
    by, for those the exchange's `has` lists as supported (ccxt.pro exchanges only:
    ccxt and ccxt.async_support list them as None)."""
    has = getattr(exchange, "has", None) or {}
    wanted = {
        key.lower()
        for key, value in has.items()
        if value and isinstance(key, str) and key.lower().startswith(("watch", "unwatch"))
    }
    if not wanted:  # ccxt and ccxt.async_support: no need to look at the class
        return {}
    by_norm: dict[str, list[str]] = {}
    for name in dir(type(exchange)):
        if name.startswith("_"):
            continue
        norm = name.replace("_", "").lower()
        if norm in wanted:
            by_norm.setdefault(norm, []).append(name)
    methods: dict[str, list[str]] = {}
    for names in by_norm.values():
        snake = [n for n in names if n == n.lower()]
        # Some are plain functions returning the coroutine of another
        # (binance's watch_order_book returns watch_order_book_for_symbols(...)).
        if snake and callable(getattr(exchange, snake[0], None)):
            methods[snake[0]] = sorted(names)
    return methods


def is_pro(exchange: Any) -> bool:
    """Whether `exchange` is a ccxt.pro exchange with at least one watch_* method."""
    return any(name.startswith("watch_") for name in watch_methods(exchange))


def is_pro_instrumented(exchange: Any) -> bool:
    return isinstance(getattr(exchange, "__dict__", {}).get(_STATE_ATTR), _ExchangeState)


# -- what is counted ------------------------------------------------------------------


class _Stream:
    """One (method, symbol) of one exchange instance. Written by the exchange's event
    loop only; read by the collection thread."""

    __slots__ = ("attributes", "count", "key", "last", "newest", "pending", "window_end")

    def __init__(self, key: tuple[str, str, str | None, bool], attributes: dict[str, Any]):
        self.key = key
        self.attributes = attributes
        self.count = 0
        self.newest: float | None = None  # Unix seconds of the newest update
        self.last: float | None = None  # monotonic arrival of the last update
        self.window_end = 0.0  # monotonic end of the current gap window
        self.pending = 0.0  # longest gap of the current window


class _ExchangeState:
    """What instrument_pro keeps for one exchange instance (never the exchange itself:
    it is collected with the engine's last reference, and its counts retired)."""

    __slots__ = (
        "__weakref__",
        "connected_urls",
        "error_attributes",
        "exchange_id",
        "finalizer",
        "gap_window",
        "monotonic",
        "originals",
        "reconnects",
        "registry",
        "streams",
        "wall",
    )

    def __init__(
        self,
        registry: _Registry,
        exchange_id: str,
        gap_window: float,
        wall: Callable[[], float],
        monotonic: Callable[[], float],
    ) -> None:
        self.registry = registry
        self.exchange_id = exchange_id
        self.gap_window = gap_window
        self.wall = wall
        self.monotonic = monotonic
        self.streams: dict[str, dict[str | None, _Stream]] = {}
        self.originals: dict[str, object] = {}
        self.connected_urls: set[str] = set()
        self.reconnects = 0
        self.error_attributes: dict[tuple[str, str], dict[str, str]] = {}
        self.finalizer: weakref.finalize[Any, Any] | None = None

    def by_symbol(self, method: str) -> dict[str | None, _Stream]:
        with self.registry.lock:
            return self.streams.setdefault(method, {})

    def new_stream(self, method: str, symbol: str | None) -> _Stream:
        registry = self.registry
        with registry.lock:
            streams = self.streams.setdefault(method, {})
            stream = streams.get(symbol)
            if stream is None:
                stream = registry.stream_for(self.exchange_id, method, symbol)
                streams[symbol] = stream
            return stream

    def updater(self, method: str) -> Callable[[Any, Any], None]:
        """update(symbol, ts): one update of (method, symbol), `ts` the exchange's
        timestamp in ms if any. A closure over everything it needs: it runs once per
        update, where every attribute lookup counts."""
        streams = self.by_symbol(method)
        new_stream = self.new_stream
        monotonic, wall, window = self.monotonic, self.wall, self.gap_window
        record = self.registry.gap.record

        def update(symbol: Any, ts: Any) -> None:
            now = monotonic()
            stream = streams.get(symbol)
            if stream is None:
                stream = new_stream(method, symbol if isinstance(symbol, str) else None)
            stream.count += 1
            cls = ts.__class__
            stream.newest = ts / 1000 if cls is int or cls is float else wall()
            last = stream.last
            stream.last = now
            if last is None:
                stream.window_end = now + window
                stream.pending = 0.0
                return
            gap = now - last
            if gap > stream.pending:
                stream.pending = gap
            if now >= stream.window_end:
                record(stream.pending, stream.attributes)
                stream.pending = 0.0
                stream.window_end = now + window

        return update

    def stop(self, method: str | None = None, symbols: Iterable[str] | None = None) -> None:
        """The engine ended these streams (un_watch_*, close): no age until they update
        again, and the time in between is not a gap."""
        with self.registry.lock:
            groups = list(self.streams.items())
        wanted = None if symbols is None else set(symbols)
        for name, streams in groups:
            if method is not None and name != method:
                continue
            for symbol, stream in list(streams.items()):
                if wanted is None or symbol in wanted:
                    stream.newest = stream.last = None
                    stream.pending = 0.0

    def connected(self, url: Any) -> None:
        key = str(url)
        with self.registry.lock:
            if key in self.connected_urls:
                self.reconnects += 1
            else:
                if len(self.connected_urls) >= _MAX_URLS:
                    self.connected_urls.clear()
                self.connected_urls.add(key)
                self.registry.connected_ids.add(self.exchange_id)

    def error(self, method: str, error: BaseException) -> None:
        kind = type(error).__name__
        attributes = self.error_attributes.get((method, kind))
        if attributes is None:
            attributes = {
                "exchange": self.exchange_id,
                "method": method,
                "error_type": safe_text(kind) or "Exception",
            }
            if len(self.error_attributes) < 1024:
                self.error_attributes[(method, kind)] = attributes
        self.registry.errors.add(1, attributes)


class _Registry:
    """The instruments of one MeterProvider and every exchange instrumented for it."""

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider=meter_provider)
        self.lock = threading.RLock()
        self.states: set[_ExchangeState] = set()
        self.retired_updates: dict[tuple[str, str, str | None, bool], int] = {}
        self.retired_attributes: dict[tuple[str, str, str | None, bool], dict[str, Any]] = {}
        self.retired_reconnects: dict[str, int] = {}
        self.connected_ids: set[str] = set()
        self.symbols: dict[str, set[str]] = {}
        self.max_symbols: dict[str, int] = {}
        meter.create_observable_counter(
            "exchange.ws.updates",
            [self._observe_updates],
            unit="{update}",
            description="Updates ccxt.pro watch_* calls returned to the engine, by exchange, method and symbol.",
        )
        meter.create_observable_gauge(
            "exchange.ws.update.age",
            [self._observe_ages],
            unit="s",
            description="Now minus the newest update's exchange timestamp (its arrival where the update has none), per websocket stream.",
        )
        self.gap: Histogram = meter.create_histogram(
            "exchange.ws.update.gap",
            unit="s",
            description="Longest time between consecutive updates of a websocket stream, one observation per stream per window (1 s by default; longer gaps each their own).",
            explicit_bucket_boundaries_advisory=GAP_BUCKETS,
        )
        meter.create_observable_counter(
            "exchange.ws.reconnects",
            [self._observe_reconnects],
            unit="{reconnect}",
            description="Websocket connections ccxt.pro re-established to a URL it had connected to before.",
        )
        self.errors: Counter = meter.create_counter(
            "exchange.ws.errors",
            unit="{error}",
            description="Exceptions raised out of ccxt.pro watch_* calls, by ccxt class.",
        )

    def stream_for(self, exchange_id: str, method: str, symbol: str | None) -> _Stream:
        """A new stream object, its symbol admitted or overflowed (lock held)."""
        attributes: dict[str, Any] = {"exchange": exchange_id, "method": method}
        label = None if symbol is None else safe_text(symbol)
        overflow = False
        if symbol is not None:
            admitted = self.symbols.setdefault(exchange_id, set())
            limit = self.max_symbols.get(exchange_id, DEFAULT_MAX_SYMBOLS)
            if label is not None and (label in admitted or len(admitted) < limit):
                admitted.add(label)
                attributes["symbol"] = label
            else:
                label, overflow = None, True
                attributes[OVERFLOW_ATTRIBUTE] = True
        return _Stream((exchange_id, method, label, overflow), attributes)

    def add(self, state: _ExchangeState) -> None:
        with self.lock:
            self.states.add(state)

    def retire(self, state: _ExchangeState) -> None:
        """Keep an exchange's counts (counters never go down) and forget its streams."""
        with self.lock:
            if state not in self.states:
                return
            self.states.discard(state)
            for streams in state.streams.values():
                for stream in streams.values():
                    key = stream.key
                    self.retired_updates[key] = self.retired_updates.get(key, 0) + stream.count
                    self.retired_attributes[key] = stream.attributes
            if state.reconnects:
                self.retired_reconnects[state.exchange_id] = (
                    self.retired_reconnects.get(state.exchange_id, 0) + state.reconnects
                )

    def _streams(self) -> list[tuple[_ExchangeState, _Stream]]:
        with self.lock:
            return [
                (state, stream)
                for state in self.states
                for streams in state.streams.values()
                for stream in list(streams.values())
            ]

    def _observe_updates(self, _: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            counts = dict(self.retired_updates)
            attributes = dict(self.retired_attributes)
            live = self._streams()
        for _state, stream in live:
            counts[stream.key] = counts.get(stream.key, 0) + stream.count
            attributes[stream.key] = stream.attributes
        return [Observation(count, attributes[key]) for key, count in counts.items()]

    def _observe_ages(self, _: CallbackOptions) -> Iterable[Observation]:
        newest: dict[tuple[str, str, str | None, bool], tuple[float, float, dict[str, Any]]] = {}
        for state, stream in self._streams():
            value = stream.newest
            if value is None:
                continue
            seen = newest.get(stream.key)
            if seen is None or value > seen[0]:
                newest[stream.key] = (value, state.wall(), stream.attributes)
        return [Observation(now - value, attrs) for value, now, attrs in newest.values()]

    def _observe_reconnects(self, _: CallbackOptions) -> Iterable[Observation]:
        with self.lock:
            counts = {exchange_id: 0 for exchange_id in self.connected_ids}
            for exchange_id, count in self.retired_reconnects.items():
                counts[exchange_id] = counts.get(exchange_id, 0) + count
            for state in self.states:
                counts[state.exchange_id] = counts.get(state.exchange_id, 0) + state.reconnects
        return [Observation(count, {"exchange": name}) for name, count in sorted(counts.items())]


_registries_lock = threading.Lock()
_registries: weakref.WeakKeyDictionary[Any, _Registry] = weakref.WeakKeyDictionary()
# Made through the API's proxy, before any provider was set: its instruments report
# to the provider set later, which must not get a second set (the SDK would keep
# the first instruments of a name and drop the callbacks of the second).
_proxy_registry: _Registry | None = None


def _registry(meter_provider: MeterProvider | None) -> _Registry:
    """The one registry of a provider (default: the global one, proxy included)."""
    global _proxy_registry
    current = metrics.get_meter_provider()
    provider = meter_provider if meter_provider is not None else current
    with _registries_lock:
        registry = _registries.get(provider)
        if registry is not None:
            return registry
        if _proxy_registry is not None and provider is current:
            return _proxy_registry
        registry = _Registry(provider)
        if type(provider).__name__ == "_ProxyMeterProvider":
            _proxy_registry = registry
        else:
            _registries[provider] = registry
        return registry


def _env_max_symbols() -> int:
    value = settings.env(MAX_SYMBOLS_ENV)
    try:
        number = int(value) if value is not None else DEFAULT_MAX_SYMBOLS
    except ValueError:
        return DEFAULT_MAX_SYMBOLS
    return number if number >= 0 else DEFAULT_MAX_SYMBOLS


# -- reading an update out of what a watch returned --------------------------------


def _symbol_picker(method: Callable[..., Any]) -> Callable[[tuple[Any, ...], dict[str, Any]], Any]:
    """The call's `symbol` argument, from its position or keyword (None if absent)."""
    try:
        parameters = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        parameters = []
    if "symbol" not in parameters:
        return lambda args, kwargs: None
    index = parameters.index("symbol")

    def pick(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        return args[index] if index < len(args) else kwargs.get("symbol")

    return pick


def _symbols_argument(
    method: Callable[..., Any],
) -> Callable[[tuple[Any, ...], dict[str, Any]], list[str] | None]:
    """An un_watch_* call's symbols: its `symbol`, its `symbols`, or None (all)."""
    try:
        parameters = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        parameters = []

    def pick(args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str] | None:
        for name in ("symbol", "symbols"):
            if name not in parameters:
                continue
            index = parameters.index(name)
            value = args[index] if index < len(args) else kwargs.get(name)
            if isinstance(value, str):
                return [value]
            if isinstance(value, list | tuple):
                return [v for v in value if isinstance(v, str)]
        return None

    return pick


def _observer(
    update: Callable[[Any, Any], None], name: str, method: Callable[..., Any]
) -> Callable[[Any, tuple[Any, ...], dict[str, Any]], None]:
    """What one watch method's results count as: a function (result, args, kwargs)."""
    symbol_of = _symbol_picker(method)
    candles = "ohlcv" in name

    def observe(result: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        if isinstance(result, dict):
            symbol = result.get("symbol")
            if symbol.__class__ is str:  # a ticker, an order book, a position
                update(symbol, result.get("timestamp"))
                return
            if result and "info" not in result:
                # {symbol: ticker} (watch_tickers, watch_bids_asks, ...) or
                # {symbol: {timeframe: candles}} (watch_ohlcv_for_symbols).
                for key, value in result.items():
                    ts = None
                    if not candles and isinstance(value, dict):
                        key = value.get("symbol", key)
                        ts = value.get("timestamp")
                    update(key, ts)
                return
            # a balance
            update(symbol_of(args, kwargs), result.get("timestamp"))
            return
        symbol = symbol_of(args, kwargs)
        ts = None
        if isinstance(result, list) and result and not candles:
            # trades, orders, positions, liquidations, newest last
            item = result[-1]
            if isinstance(item, dict):
                if symbol is None:
                    symbol = item.get("symbol")
                ts = item.get("lastUpdateTimestamp") or item.get("timestamp")
        update(symbol, ts)

    return observe


# -- wrapping --------------------------------------------------------------------------


def _wrap_watch(state: _ExchangeState, name: str, method: Callable[..., Any]) -> Callable[..., Any]:
    update = state.updater(name)
    observe = _observer(update, name, method)
    error = state.error

    @functools.wraps(method)
    async def watch(*args: Any, **kwargs: Any) -> Any:
        if _IN_WATCH.get():
            return await method(*args, **kwargs)
        token = _IN_WATCH.set(True)
        try:
            result = await method(*args, **kwargs)
        except Exception as exc:
            _IN_WATCH.reset(token)
            with contextlib.suppress(Exception):
                error(name, exc)
            raise
        except BaseException:
            _IN_WATCH.reset(token)
            raise
        _IN_WATCH.reset(token)
        # Not contextlib.suppress: this runs once per update, and try costs nothing.
        try:
            # A ticker or an order book, the most frequent, without another call.
            if isinstance(result, dict) and (symbol := result.get("symbol")).__class__ is str:
                update(symbol, result.get("timestamp"))
            else:
                observe(result, args, kwargs)
        except Exception:  # telemetry must never change the call's outcome
            pass
        return result

    return watch


def _wrap_unwatch(
    state: _ExchangeState, name: str, method: Callable[..., Any]
) -> Callable[..., Any]:
    target = name[len("un_") :]
    symbols_of = _symbols_argument(method)

    @functools.wraps(method)
    async def unwatch(*args: Any, **kwargs: Any) -> Any:
        result = await method(*args, **kwargs)
        with contextlib.suppress(Exception):
            state.stop(target, symbols_of(args, kwargs))
        return result

    return unwatch


def _wrap_close(state: _ExchangeState, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    async def close(*args: Any, **kwargs: Any) -> Any:
        try:
            return await method(*args, **kwargs)
        finally:
            with contextlib.suppress(Exception):
                state.stop()

    return close


def _wrap_on_connected(state: _ExchangeState, method: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(method)
    def on_connected(client: Any, *args: Any, **kwargs: Any) -> Any:
        with contextlib.suppress(Exception):
            state.connected(getattr(client, "url", None))
        return method(client, *args, **kwargs)

    return on_connected


def instrument_pro(
    exchange: Any,
    meter_provider: MeterProvider | None = None,
    *,
    max_symbols: int | None = None,
    gap_window: float | None = None,
    clock: Callable[[], float] | None = None,
    monotonic: Callable[[], float] | None = None,
) -> bool:
    """Record the websocket metrics of one ccxt.pro exchange instance (module
    docstring). True if it was instrumented now; False if it is not a ccxt.pro
    exchange or is already instrumented.

    `meter_provider`: where the metrics go (default: the global one).
    `max_symbols`: distinct symbols per exchange id with a label of their own
    (default TICKSCOPE_SHIM_WS_MAX_SYMBOLS, else 100; the first value given for an
    exchange id and meter provider holds). `gap_window`: seconds per gap
    observation (default 1; 0 records every gap). `clock` (Unix seconds) and
    `monotonic` replace time.time and time.monotonic, for tests.
    """
    if is_pro_instrumented(exchange):
        return False
    methods = watch_methods(exchange)
    if not any(name.startswith("watch_") for name in methods):
        return False
    registry = _registry(meter_provider)
    exchange_id = safe_text(str(getattr(exchange, "id", "") or "")) or "unknown"
    window = DEFAULT_GAP_WINDOW if gap_window is None else float(gap_window)
    if not window >= 0:
        raise ValueError("gap_window must be a number of seconds, 0 or more")
    limit = _env_max_symbols() if max_symbols is None else int(max_symbols)
    if limit < 0:
        raise ValueError("max_symbols must be 0 or more")
    with registry.lock:
        registry.max_symbols.setdefault(exchange_id, limit)
    state = _ExchangeState(
        registry, exchange_id, window, clock or time.time, monotonic or time.monotonic
    )

    def replace(attribute: str, wrapper: Callable[..., Any]) -> None:
        state.originals[attribute] = exchange.__dict__.get(attribute, _MISSING)
        setattr(exchange, attribute, wrapper)

    for name, attributes in methods.items():
        method = getattr(exchange, name)
        if name.startswith("watch_"):
            wrapper = _wrap_watch(state, name, method)
        else:
            wrapper = _wrap_unwatch(state, name, method)
        for attribute in attributes:
            replace(attribute, wrapper)
    close = getattr(exchange, "close", None)
    if inspect.iscoroutinefunction(close):
        replace("close", _wrap_close(state, close))
    on_connected = getattr(exchange, "on_connected", None)
    if callable(on_connected):
        # Read by exchange.client() when it makes a Client: every connection made
        # from now on (a reconnect always makes a new Client) calls it.
        replace("on_connected", _wrap_on_connected(state, on_connected))
    exchange.__dict__[_STATE_ATTR] = state
    registry.add(state)
    # An exchange that cannot be weakly referenced is retired by uninstrument_pro only.
    with contextlib.suppress(TypeError):
        state.finalizer = weakref.finalize(exchange, registry.retire, state)
    return True


def uninstrument_pro(exchange: Any) -> None:
    """Put back what instrument_pro replaced; the exchange's counts stay in the
    counters, its streams leave the age gauge. Call it before restoring anything
    wrapped earlier (it puts back what it found, wrappers included)."""
    state = exchange.__dict__.pop(_STATE_ATTR, None)
    if not isinstance(state, _ExchangeState):
        return
    for attribute, original in state.originals.items():
        if original is _MISSING:
            exchange.__dict__.pop(attribute, None)
        else:
            setattr(exchange, attribute, original)
    if state.finalizer is not None:
        state.finalizer.detach()
    state.registry.retire(state)
