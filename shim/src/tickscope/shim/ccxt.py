"""OpenTelemetry for ccxt exchange clients, sync and async.

Every unified API method of an instrumented exchange (those its `has` map
lists, plus load_markets and friends) produces one CLIENT span named
`ccxt.<method>` with the attributes in DESIGN.md. The HTTP response(s) behind a
call are recorded as attributes of that span, through the exchange's own
`handle_errors` hook, which ccxt calls for every response, sync or async, with
the status code and headers: server.address, http.request.method,
http.response.status_code and, from rate-limit headers, trading.ratelimit.used
and trading.ratelimit.limit.

The span is created when the call returns, with the call's real start and end
times and the caller's context as its parent: that keeps a call's cost near one
bare SDK span (see `_emit`). The span is therefore not the "current" span while
ccxt runs; if the engine also uses OpenTelemetry's own requests or aiohttp
instrumentation, their HTTP spans become siblings of the ccxt span, not children.

A ccxt exception sets the span's status to ERROR and `error.type` to its class
name, and reaches the caller unchanged. The exception's message is never
recorded: ccxt writes the request URL into it, and for private endpoints that URL
carries the signed query string. Calls made inside an instrumented call (a
create_limit_buy_order calls create_order; create_order may call load_markets)
add no spans of their own, so one call of the engine is one span.

Instrumentation replaces bound methods on the exchange instance only; the
class, and every other instance, is untouched, and `uninstrument_exchange`
restores the instance exactly. Every exchange instrumented is registered (by
weak reference) with tickscope.shim.credentials, so that its credentials are
masked in logs (tickscope.shim.logredact).

Besides the span, a call's outcome feeds the shim's metrics (OpenTelemetry
API instruments, registered once per meter provider when an exchange is
instrumented): every response's Date header, fetch_time's server time and the
times on placed and cancelled orders estimate the exchange's clock skew
(tickscope.shim.clock); the results of fetch_ticker, fetch_tickers,
fetch_order_book, fetch_trades and fetch_ohlcv give the age of their market
data (tickscope.shim.marketdata); with account metrics on, balances, positions,
open orders and fills (tickscope.shim.account). Like spans, none of this is
recorded while the export gate is closed.

OpenTelemetry API only: no SDK import here (the contrib guidelines' rule for
instrumentations); whether to make a span at all is asked of tickscope.shim.gate.
`instrument_ccxt` / `uninstrument_ccxt` are CcxtInstrumentor().instrument() /
.uninstrument() (tickscope.shim.instrumentation), which use `patch_exchanges` /
`unpatch_exchanges` below.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import logging
import re
import threading
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from tickscope.shim import (
    account,
    ccxt_pro,
    clock,
    credentials,
    gate,
    logredact,
    marketdata,
    settings,
)
from tickscope.shim.ratelimit import Reader, reader_for
from tickscope.shim.redact import safe_method, safe_text, server_address
from tickscope.shim.version import __version__

__all__ = [
    "instrument_ccxt",
    "instrument_exchange",
    "is_instrumented",
    "uninstrument_ccxt",
    "uninstrument_exchange",
]

INSTRUMENTATION_NAME = "tickscope.shim.ccxt"
# Unified methods ccxt does not list in `has` but engines call.
EXTRA_METHODS = ("load_markets", "fetch_markets", "fetch_currencies", "fetch_time", "fetch_status")
_STATE_ATTR = "_tickscope_instrumentation"

# The instrumented call running in this context (thread or asyncio task), if any:
# calls it makes to other unified methods go straight through, and the HTTP
# responses it gets are noted on it.
_IN_CALL: contextvars.ContextVar[_Call | None] = contextvars.ContextVar(
    "tickscope_in_ccxt_call", default=None
)
_MISSING = object()


class _State:
    __slots__ = ("originals", "rate_limits")

    def __init__(self, rate_limits: Mapping[str, float] | None) -> None:
        self.originals: dict[str, object] = {}
        self.rate_limits = rate_limits


def is_instrumented(exchange: Any) -> bool:
    return isinstance(exchange.__dict__.get(_STATE_ATTR), _State)


def _unified_methods(exchange: Any) -> dict[str, list[str]]:
    """snake_case unified method -> every attribute name it is reachable by
    (ccxt defines a camelCase alias for each: fetchTicker is fetch_ticker)."""
    by_norm: dict[str, list[str]] = {}
    for name in dir(type(exchange)):
        if name.startswith("_"):
            continue
        by_norm.setdefault(name.replace("_", "").lower(), []).append(name)
    wanted = {key for key, value in (getattr(exchange, "has", None) or {}).items() if value}
    # ccxt.pro's watch_* are metrics (ccxt_pro), not spans: a stream updates far more often
    # than a REST call, and a span around a watch would hide the REST calls made inside it
    # (load_markets, an order book's snapshot).
    wanted = {k for k in wanted if not k.lower().startswith(("watch", "unwatch"))}
    wanted.update(EXTRA_METHODS)
    methods: dict[str, list[str]] = {}
    for key in wanted:
        names = [
            n
            for n in by_norm.get(key.replace("_", "").lower(), [])
            if callable(getattr(exchange, n, None))
        ]
        snake = [n for n in names if n == n.lower()]
        if snake:
            methods[snake[0]] = names
    return methods


_ORDER_HELPER = re.compile(r"^create_(?P<rest>\w+)_order$")


def _order_defaults(method: str) -> dict[str, str]:
    """side and type implied by a helper's name: create_limit_buy_order ->
    type limit, side buy; create_market_order -> type market."""
    match = _ORDER_HELPER.match(method)
    if not match:
        return {}
    words = match.group("rest").split("_")
    found = {}
    if "buy" in words:
        found["trading.order.side"] = "buy"
    elif "sell" in words:
        found["trading.order.side"] = "sell"
    if "market" in words:
        found["trading.order.type"] = "market"
    elif "limit" in words:
        found["trading.order.type"] = "limit"
    return found


def _argument_picker(
    method: Callable[..., Any], name: str
) -> Callable[[tuple[Any, ...], dict[str, Any]], dict[str, str]]:
    """A function from call arguments to the span's symbol/side/type attributes."""
    try:
        parameters = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        parameters = []
    positions = {
        attribute: parameters.index(param)
        for param, attribute in (
            ("symbol", "trading.symbol"),
            ("side", "trading.order.side"),
            ("type", "trading.order.type"),
        )
        if param in parameters
    }
    defaults = _order_defaults(name)

    checked: dict[tuple[int, str], str | None] = {}  # symbols and sides repeat: check once

    def pick(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
        found = dict(defaults)
        for attribute, index in positions.items():
            param = parameters[index]
            value = args[index] if index < len(args) else kwargs.get(param)
            if not isinstance(value, str):
                continue
            key = (index, value)
            text = checked.get(key)
            if text is None and key not in checked:
                text = safe_text(value)
                if text is not None and attribute != "trading.symbol":
                    text = text.lower()
                if len(checked) > 1024:
                    checked.clear()
                checked[key] = text
            if text is not None:
                found[attribute] = text
        return found

    return pick


class _Call:
    """One instrumented call in flight: what its last HTTP response said, and when
    it came (tickscope.shim.clock's reading)."""

    __slots__ = ("code", "headers", "method", "received", "url")

    def __init__(self) -> None:
        self.code: Any = None
        self.url: Any = None
        self.method: Any = None
        self.headers: Any = None
        self.received: float | None = None


def _emit(
    tracer: trace.Tracer,
    span_name: str,
    attributes: dict[str, Any],
    call: _Call,
    error: BaseException | None,
    start_ns: int,
    end_ns: int,
    read_rate_limit: Reader,
) -> None:
    """Create the call's span, finished, with every attribute at once.

    The span is made when the call is over, with the call's real start and end
    times; its parent is the caller's current span (ccxt does not change the
    context, so it is the same at the end of the call as at its start). Made that
    way it costs about what a bare SDK span with the same attributes costs: no
    context switch around the call, and one pass of attribute validation.
    """
    if isinstance(call.code, int):
        attributes["http.response.status_code"] = call.code
    if isinstance(call.url, str):
        host = _host(call.url)
        if host is not None:
            attributes["server.address"] = host
    method = call.method
    if method is not None:
        http_method = _METHODS.get(method) or safe_method(method)
        if http_method is not None:
            attributes["http.request.method"] = http_method
    if call.headers is not None and hasattr(call.headers, "get"):
        found = read_rate_limit(call.headers)
        if found is not None:
            attributes["trading.ratelimit.used"] = found[0]
            attributes["trading.ratelimit.limit"] = found[1]
    if error is not None:
        attributes["error.type"] = type(error).__name__
    span = tracer.start_span(
        span_name, kind=SpanKind.CLIENT, attributes=attributes, start_time=start_ns
    )
    if error is not None:
        # The description is the class only: ccxt messages hold URLs with signatures.
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end(end_time=end_ns)


_METHODS = {m: m for m in ("GET", "POST", "PUT", "DELETE", "PATCH", "HEAD")}
_SKIPPED = _Call()  # the marker of a call made without a span

_HOSTS: dict[str, str | None] = {}


def _host(url: str) -> str | None:
    """server.address of a request URL; cached on the part before the query
    (private URLs differ in every call only after the "?")."""
    base = url.partition("?")[0]
    try:
        return _HOSTS[base]
    except KeyError:
        host = server_address(base)
        if len(_HOSTS) > 1024:
            _HOSTS.clear()
        _HOSTS[base] = host
        return host


ResultHook = Callable[[str, Any, Mapping[str, Any], float, float], None]
# The arguments result hooks read (market data's symbol, symbols and timeframe).
_HOOK_ARGUMENTS = ("symbol", "symbols", "timeframe")


def _server_time(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    clock.note_server_time(exchange, result, started, ended)


def _order_time(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    clock.note_order(exchange, result, started, ended, created=True)


def _cancel_time(
    exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
) -> None:
    clock.note_order(exchange, result, started, ended, created=False)


def _clock_hook(name: str) -> ResultHook | None:
    if name == "fetch_time":
        return _server_time
    if name == "cancel_order":
        return _cancel_time
    if account.places_orders(name) and not name.endswith("_orders"):
        return _order_time
    return None


def _result_hook(name: str) -> ResultHook | None:
    """What to do with a successful call's result besides its span, if anything:
    one function made of the clock's, market data's and the account's."""
    hooks = [
        hook
        for hook in (_clock_hook(name), marketdata.hook_for(name), account.hook_for(name))
        if hook is not None
    ]
    if not hooks:
        return None
    if len(hooks) == 1:
        return hooks[0]

    def each(
        exchange: str, result: Any, arguments: Mapping[str, Any], started: float, ended: float
    ) -> None:
        for hook in hooks:
            try:  # noqa: SIM105 - contextlib.suppress costs a context manager per hook
                hook(exchange, result, arguments, started, ended)
            except Exception:  # one figure's failure leaves the others alone
                pass

    return each


def _argument_reader(
    method: Callable[..., Any],
) -> Callable[[tuple[Any, ...], dict[str, Any]], dict[str, Any]]:
    """A function from call arguments to those of _HOOK_ARGUMENTS it was given."""
    try:
        parameters = list(inspect.signature(method).parameters)
    except (TypeError, ValueError):
        parameters = []
    positions = [(p, parameters.index(p)) for p in _HOOK_ARGUMENTS if p in parameters]

    def read(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        found = {}
        for param, index in positions:
            value = args[index] if index < len(args) else kwargs.get(param)
            if value is not None:
                found[param] = value
        return found

    return read


def _wrap(
    exchange: Any, name: str, method: Callable[..., Any], tracer: trace.Tracer, state: _State
) -> Callable[..., Any]:
    pick = _argument_picker(method, name)
    exchange_id = str(getattr(exchange, "id", "unknown"))
    span_name = f"ccxt.{name}"
    base = {"exchange.id": exchange_id, "ccxt.method": name}
    read_rate_limit = reader_for(exchange_id, state.rate_limits)
    hook = _result_hook(name)
    read_arguments = _argument_reader(method) if hook is not None else None
    now = clock.now
    note_date = clock.note_date

    def finish(
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        call: _Call,
        error: BaseException | None,
        start_ns: int,
        started: float,
        result: Any,
    ) -> None:
        end_ns = time.time_ns()
        ended = now()
        try:
            attributes = dict(base)
            attributes.update(pick(args, kwargs))
            _emit(tracer, span_name, attributes, call, error, start_ns, end_ns, read_rate_limit)
        except Exception:  # telemetry must never change the call's outcome
            pass
        try:
            if call.headers is not None:
                received = call.received
                note_date(
                    exchange_id, call.headers, started, ended if received is None else received
                )
            if hook is not None and read_arguments is not None and result is not _MISSING:
                hook(exchange_id, result, read_arguments(args, kwargs), started, ended)
        except Exception:  # nor must a metric
            pass

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_call(*args: Any, **kwargs: Any) -> Any:
            if _IN_CALL.get() is not None:
                return await method(*args, **kwargs)
            if not gate.allow():
                # The sidecar is unreachable: make no span (and none for nested calls).
                token = _IN_CALL.set(_SKIPPED)
                try:
                    return await method(*args, **kwargs)
                finally:
                    _IN_CALL.reset(token)
            call = _Call()
            start_ns = time.time_ns()
            started = now()
            token = _IN_CALL.set(call)
            error: BaseException | None = None
            result: Any = _MISSING
            try:
                result = await method(*args, **kwargs)
                return result
            except Exception as exc:
                error = exc
                raise
            finally:
                _IN_CALL.reset(token)
                finish(args, kwargs, call, error, start_ns, started, result)

        return async_call

    @functools.wraps(method)
    def sync_call(*args: Any, **kwargs: Any) -> Any:
        if _IN_CALL.get() is not None:
            return method(*args, **kwargs)
        if not gate.allow():
            # The sidecar is unreachable: make no span (and none for nested calls).
            token = _IN_CALL.set(_SKIPPED)
            try:
                return method(*args, **kwargs)
            finally:
                _IN_CALL.reset(token)
        call = _Call()
        start_ns = time.time_ns()
        started = now()
        token = _IN_CALL.set(call)
        error: BaseException | None = None
        result: Any = _MISSING
        try:
            result = method(*args, **kwargs)
            return result
        except Exception as exc:
            error = exc
            raise
        finally:
            _IN_CALL.reset(token)
            finish(args, kwargs, call, error, start_ns, started, result)

    return sync_call


def _response_hook(original: Callable[..., Any]) -> Callable[..., Any]:
    """Wraps `handle_errors`, which ccxt calls with every HTTP response,
    (status code, reason, url, method, response headers, body, ...): the call in
    flight keeps the last response's figures for its span."""

    now = clock.now

    @functools.wraps(original)
    def handle_errors(*args: Any, **kwargs: Any) -> Any:
        call = _IN_CALL.get()
        if call is not None and call is not _SKIPPED and len(args) >= 5:
            call.code, _, call.url, call.method, call.headers = args[:5]
            call.received = now()
        return original(*args, **kwargs)

    return handle_errors


_meters_lock = threading.Lock()
# Meter providers the shim's exchange metrics are registered with: observable
# instruments cannot be removed, so each provider gets them once.
_metered: weakref.WeakSet[Any] = weakref.WeakSet()
# Registered through the API's proxy (no provider was set yet): that registration
# follows the provider set later, which must not get a second one.
_metered_proxy = False
_configured_meter_provider: MeterProvider | None = None


def set_meter_provider(meter_provider: MeterProvider | None) -> None:
    """Where the metrics of exchanges instrumented from now on go (configure() sets
    its provider); None: the global one."""
    global _configured_meter_provider
    _configured_meter_provider = meter_provider


def _register_metrics(meter_provider: MeterProvider | None) -> None:
    """The clock-skew, market-data and account instruments, once per provider."""
    global _metered_proxy
    provider = meter_provider or _configured_meter_provider or metrics.get_meter_provider()
    with _meters_lock:
        if provider in _metered:
            return
        is_proxy = type(provider).__name__ == "_ProxyMeterProvider"
        if is_proxy and _metered_proxy:
            return
        if not is_proxy and _metered_proxy and provider is metrics.get_meter_provider():
            return  # the proxy's instruments already report to the global provider
        meter = metrics.get_meter(INSTRUMENTATION_NAME, __version__, meter_provider=provider)
        clock.register(meter)
        marketdata.register(meter)
        account.register(meter, provider)
        if is_proxy:
            _metered_proxy = True
        else:
            _metered.add(provider)


def instrument_exchange(
    exchange: Any,
    tracer_provider: TracerProvider | None = None,
    rate_limits: Mapping[str, float] | None = None,
    meter_provider: MeterProvider | None = None,
) -> Any:
    """Instrument one ccxt exchange (sync or async); returns it. Idempotent.

    Spans go to `tracer_provider`, or to the global one (set by `shim.configure`,
    by opentelemetry-instrument, or by the engine's own OpenTelemetry setup);
    metrics (clock skew, market-data age, account figures) to `meter_provider`,
    else configure()'s, else the global one.
    `rate_limits` (request budgets by exchange id) add to those given to
    configure() or the instrumentor and to TICKSCOPE_SHIM_RATE_LIMITS.
    """
    if is_instrumented(exchange):
        return exchange
    try:
        _register_metrics(meter_provider)
    except Exception:  # no metrics is better than no exchange
        logging.getLogger("tickscope.shim").warning("exchange metrics not registered")
    # Registered first: its credentials are masked in logs from now on.
    credentials.register(exchange)
    logger = getattr(exchange, "logger", None)
    if isinstance(logger, logging.Logger):
        logredact.add_logger(logger.name)
    logredact.install()
    tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider)
    state = _State(_rate_limits(rate_limits))
    for name, attributes in _unified_methods(exchange).items():
        method = getattr(exchange, name)
        wrapper = _wrap(exchange, name, method, tracer, state)
        for attribute in attributes:
            state.originals[attribute] = exchange.__dict__.get(attribute, _MISSING)
            setattr(exchange, attribute, wrapper)
    handle_errors = getattr(exchange, "handle_errors", None)
    if callable(handle_errors):
        state.originals["handle_errors"] = exchange.__dict__.get("handle_errors", _MISSING)
        exchange.handle_errors = _response_hook(handle_errors)
    try:
        ccxt_pro.instrument_pro(exchange, meter_provider or _configured_meter_provider)
    except Exception:  # no websocket metrics is better than no exchange
        logging.getLogger("tickscope.shim").warning("websocket metrics not set up")
    exchange.__dict__[_STATE_ATTR] = state
    return exchange


def uninstrument_exchange(exchange: Any) -> Any:
    """Put back every method `instrument_exchange` replaced."""
    # First: ccxt_pro restores the watch methods it wrapped before ours are put back.
    ccxt_pro.uninstrument_pro(exchange)
    state = exchange.__dict__.pop(_STATE_ATTR, None)
    if not isinstance(state, _State):
        return exchange
    for attribute, original in state.originals.items():
        if original is _MISSING:
            exchange.__dict__.pop(attribute, None)
        else:
            setattr(exchange, attribute, original)
    return exchange


_patch_lock = threading.Lock()
_patched_init: dict[type, Callable[..., None]] = {}
# Exchanges the patched __init__ instrumented: unpatch_exchanges restores them.
_patched_exchanges: dict[int, weakref.ref[Any]] = {}
# Rate limits given to configure() or the instrumentor, for every exchange
# instrumented afterwards (also those instrumented with instrument_exchange).
_configured_rate_limits: dict[str, float] = {}


def set_rate_limits(rate_limits: Mapping[str, float] | None) -> None:
    """Request budgets by exchange id for exchanges instrumented from now on."""
    global _configured_rate_limits
    _configured_rate_limits = dict(rate_limits or {})


def _rate_limits(explicit: Mapping[str, float] | None) -> dict[str, float]:
    return {**settings.env_rate_limits(), **_configured_rate_limits, **(explicit or {})}


def _remember(exchange: Any) -> None:
    key = id(exchange)

    def forget(_: weakref.ref[Any]) -> None:
        _patched_exchanges.pop(key, None)

    # An exchange that cannot be weakly referenced stays instrumented.
    with contextlib.suppress(TypeError):
        _patched_exchanges[key] = weakref.ref(exchange, forget)


def patch_exchanges(
    tracer_provider: TracerProvider | None = None, rate_limits: Mapping[str, float] | None = None
) -> bool:
    """Instrument every ccxt exchange created from now on (sync and async_support),
    by wrapping the __init__ both derive from. False if already patched."""
    # Imported here: importing the shim alone must not load ccxt (~80 MB).
    from ccxt.base.exchange import BaseExchange

    with _patch_lock:
        if BaseExchange in _patched_init:
            return False
        original = BaseExchange.__init__

        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            # Both ccxt.Exchange and ccxt.async_support's Exchange derive from this
            # BaseExchange and run its __init__: every exchange ends up here.
            if not is_instrumented(self):
                instrument_exchange(self, tracer_provider, rate_limits)
                _remember(self)

        _patched_init[BaseExchange] = original
        setattr(BaseExchange, "__init__", __init__)  # noqa: B010 - assigning a method on the class
        return True


def unpatch_exchanges() -> None:
    """Undo patch_exchanges: new exchanges are plain, and those it instrumented are
    restored (exchanges given to instrument_exchange by the engine stay as they are)."""
    with _patch_lock:
        for cls, original in _patched_init.items():
            setattr(cls, "__init__", original)  # noqa: B010
        _patched_init.clear()
        refs = list(_patched_exchanges.values())
        _patched_exchanges.clear()
    for ref in refs:
        exchange = ref()
        if exchange is not None:
            uninstrument_exchange(exchange)


def instrument_ccxt(
    tracer_provider: TracerProvider | None = None, rate_limits: Mapping[str, float] | None = None
) -> None:
    """Instrument every ccxt exchange created from now on (sync and async_support):
    CcxtInstrumentor().instrument(). A no-op if it already is instrumented."""
    from tickscope.shim.instrumentation import CcxtInstrumentor

    instrumentor = CcxtInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=tracer_provider, rate_limits=rate_limits)


def uninstrument_ccxt() -> None:
    """CcxtInstrumentor().uninstrument(): new exchanges are created plain, and the
    exchanges instrument_ccxt instrumented are restored."""
    from tickscope.shim.instrumentation import CcxtInstrumentor

    instrumentor = CcxtInstrumentor()
    if instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.uninstrument()
