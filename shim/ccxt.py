"""OpenTelemetry for ccxt exchange clients, sync and async.

Every unified API method of an instrumented exchange (those its `has` map
lists, plus load_markets and friends) produces one CLIENT span named
`ccxt.<method>` with the attributes in DESIGN.md. The HTTP response(s) behind a
call are recorded as attributes of that span, through the exchange's own
`handle_errors` hook, which ccxt calls for every response, sync or async, with
the status code and headers: server.address, http.request.method,
http.response.status_code and, from rate-limit headers, trading.ratelimit.used
and trading.ratelimit.limit.

A ccxt exception sets the span's status to ERROR and `error.type` to its class
name, and reaches the caller unchanged. The exception's message is never
recorded: ccxt writes the request URL into it, and for private endpoints that URL
carries the signed query string. Calls made inside an instrumented call (a
create_limit_buy_order calls create_order; create_order may call load_markets)
add no spans of their own, so one call of the engine is one span.

Instrumentation replaces bound methods on the exchange instance only; the
class, and every other instance, is untouched, and `uninstrument_exchange`
restores the instance exactly.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode, TracerProvider

from shim.ratelimit import parse_rate_limit
from shim.redact import safe_method, safe_text, server_address
from shim.version import __version__

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

# True while an instrumented call runs in this context (thread or asyncio task):
# calls it makes to other unified methods go straight through.
_IN_CALL: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "tickscope_in_ccxt_call", default=False
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

    def pick(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, str]:
        found = dict(defaults)
        for attribute, index in positions.items():
            param = parameters[index]
            value = args[index] if index < len(args) else kwargs.get(param)
            text = safe_text(value)
            if text is not None:
                found[attribute] = text.lower() if attribute != "trading.symbol" else text
        return found

    return pick


def _start(tracer: trace.Tracer, exchange_id: str, name: str, extra: dict[str, str]) -> trace.Span:
    attributes: dict[str, str] = {"exchange.id": exchange_id, "ccxt.method": name}
    attributes.update(extra)
    return tracer.start_span(f"ccxt.{name}", kind=SpanKind.CLIENT, attributes=attributes)


def _fail(span: trace.Span, error: BaseException) -> None:
    kind = type(error).__name__
    span.set_attribute("error.type", kind)
    # The description is the class only: ccxt messages hold URLs with signatures.
    span.set_status(Status(StatusCode.ERROR, kind))


def _wrap(
    exchange: Any, name: str, method: Callable[..., Any], tracer: trace.Tracer
) -> Callable[..., Any]:
    pick = _argument_picker(method, name)
    exchange_id = str(getattr(exchange, "id", "unknown"))

    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def async_call(*args: Any, **kwargs: Any) -> Any:
            if _IN_CALL.get():
                return await method(*args, **kwargs)
            span = _start(tracer, exchange_id, name, pick(args, kwargs))
            token = _IN_CALL.set(True)
            try:
                with trace.use_span(
                    span, end_on_exit=False, record_exception=False, set_status_on_exception=False
                ):
                    return await method(*args, **kwargs)
            except Exception as error:
                _fail(span, error)
                raise
            finally:
                _IN_CALL.reset(token)
                span.end()

        return async_call

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        if _IN_CALL.get():
            return method(*args, **kwargs)
        span = _start(tracer, exchange_id, name, pick(args, kwargs))
        token = _IN_CALL.set(True)
        try:
            with trace.use_span(
                span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                return method(*args, **kwargs)
        except Exception as error:
            _fail(span, error)
            raise
        finally:
            _IN_CALL.reset(token)
            span.end()

    return call


def _response_hook(
    exchange: Any, original: Callable[..., Any], state: _State
) -> Callable[..., Any]:
    """Wraps `handle_errors`, which ccxt calls with every HTTP response:
    (status code, reason, url, method, response headers, body, ...)."""
    exchange_id = str(getattr(exchange, "id", ""))

    @functools.wraps(original)
    def handle_errors(*args: Any, **kwargs: Any) -> Any:
        if _IN_CALL.get():
            span = trace.get_current_span()
            if span.is_recording():
                # Telemetry must never change the call's outcome.
                with contextlib.suppress(Exception):
                    _record_response(span, exchange_id, args, state.rate_limits)
        return original(*args, **kwargs)

    return handle_errors


def _record_response(
    span: trace.Span,
    exchange_id: str,
    args: tuple[Any, ...],
    rate_limits: Mapping[str, float] | None,
) -> None:
    code, _reason, url, method, headers = (list(args) + [None] * 5)[:5]
    if isinstance(code, int):
        span.set_attribute("http.response.status_code", code)
    if isinstance(url, str):
        host = server_address(url)
        if host is not None:
            span.set_attribute("server.address", host)
    http_method = safe_method(method)
    if http_method is not None:
        span.set_attribute("http.request.method", http_method)
    if headers is not None and hasattr(headers, "get"):
        found = parse_rate_limit(exchange_id, headers, rate_limits)
        if found is not None:
            span.set_attribute("trading.ratelimit.used", found[0])
            span.set_attribute("trading.ratelimit.limit", found[1])


def instrument_exchange(
    exchange: Any,
    tracer_provider: TracerProvider | None = None,
    rate_limits: Mapping[str, float] | None = None,
) -> Any:
    """Instrument one ccxt exchange (sync or async); returns it. Idempotent.

    Spans go to `tracer_provider`, or to the global one (set by `shim.configure`
    or by the engine's own OpenTelemetry setup).
    """
    if is_instrumented(exchange):
        return exchange
    if rate_limits is None:
        from shim.setup import configured_rate_limits

        rate_limits = configured_rate_limits()
    tracer = trace.get_tracer(INSTRUMENTATION_NAME, __version__, tracer_provider=tracer_provider)
    state = _State(rate_limits)
    for name, attributes in _unified_methods(exchange).items():
        method = getattr(exchange, name)
        wrapper = _wrap(exchange, name, method, tracer)
        for attribute in attributes:
            state.originals[attribute] = exchange.__dict__.get(attribute, _MISSING)
            setattr(exchange, attribute, wrapper)
    handle_errors = getattr(exchange, "handle_errors", None)
    if callable(handle_errors):
        state.originals["handle_errors"] = exchange.__dict__.get("handle_errors", _MISSING)
        exchange.handle_errors = _response_hook(exchange, handle_errors, state)
    exchange.__dict__[_STATE_ATTR] = state
    return exchange


def uninstrument_exchange(exchange: Any) -> Any:
    """Put back every method `instrument_exchange` replaced."""
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


def instrument_ccxt(
    tracer_provider: TracerProvider | None = None, rate_limits: Mapping[str, float] | None = None
) -> None:
    """Instrument every ccxt exchange created from now on (sync and async_support)."""
    # Imported here: importing the shim alone must not load ccxt (~80 MB).
    from ccxt.base.exchange import BaseExchange

    with _patch_lock:
        if BaseExchange in _patched_init:
            return
        original = BaseExchange.__init__

        @functools.wraps(original)
        def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
            original(self, *args, **kwargs)
            # Both ccxt.Exchange and ccxt.async_support's Exchange derive from this
            # BaseExchange and run its __init__: every exchange ends up here.
            instrument_exchange(self, tracer_provider, rate_limits)

        _patched_init[BaseExchange] = original
        setattr(BaseExchange, "__init__", __init__)  # noqa: B010 - assigning a method on the class


def uninstrument_ccxt() -> None:
    """Stop instrumenting new exchanges (instrumented ones stay so; see uninstrument_exchange)."""
    with _patch_lock:
        for cls, original in _patched_init.items():
            setattr(cls, "__init__", original)  # noqa: B010
        _patched_init.clear()
