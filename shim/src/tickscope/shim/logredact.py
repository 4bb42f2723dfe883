"""Secret-safe logs: credentials and signatures masked before any handler sees them.

With DEBUG logging, ccxt logs every request with its headers (the API key, e.g.
X-MBX-APIKEY) and its signed URL or body (signature=...), and urllib3 logs the
signed URL again. The shim masks them (tickscope.shim.credentials) in the
message, the arguments, the exception text and the stack of every record logged
on the `ccxt`, `urllib3`, `aiohttp.client` and `requests` loggers, their child
loggers, and the logger an instrumented exchange was given (``exchange.logger``).

Why a record factory and not a logging.Filter on those loggers: a filter on a
logger sees only records logged on that very logger, and these libraries log on
child loggers (ccxt.base.exchange, urllib3.connectionpool, ...) that may be
created after the shim is installed; a filter on handlers would need the
engine's handlers, which are the engine's. logging.setLogRecordFactory is the
hook logging offers for this: every record is made by it, on every logger, before
any filter or handler sees it. The shim's factory wraps the one that was set
(OpenTelemetry's logging instrumentation wraps it the same way), so both apply.

OpenTelemetry log bridges (the SDK's LoggingHandler, which
OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED puts on the root logger, and
the logging instrumentation's) export records of every logger: a filter is added
to each one found on the root logger, when installed and whenever the root
logger's handlers change, which masks the instrumented exchanges' credentials in
everything they export.

On by default; TICKSCOPE_SHIM_REDACT_LOGS=false, configure(redact_logs=False)
or CcxtInstrumentor().instrument(redact_logs=False) turn it off.
Standard library only.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from typing import Any

from tickscope.shim import credentials, settings

__all__ = [
    "REDACTED_LOGGERS",
    "RedactingFilter",
    "add_logger",
    "enabled",
    "install",
    "is_installed",
    "mask_record",
    "set_enabled",
    "uninstall",
]

REDACTED_LOGGERS = ("ccxt", "urllib3", "aiohttp.client", "requests")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_formatter = logging.Formatter()


def _mask_value(value: Any) -> tuple[bool, str]:
    """(whether str(value) or repr(value) holds something to mask, masked str(value))."""
    try:
        text = str(value)
        shown = repr(value)
    except Exception:
        return True, credentials.MASK
    masked = credentials.mask(text)
    return masked != text or credentials.mask(shown) != shown, masked


def mask_record(record: logging.LogRecord) -> None:
    """Mask credentials and signatures in `record`, in place. A record with
    something to mask gets its masked message as `msg` and no `args` (so a
    handler reading either sees no secret); its exception, if the traceback held
    something to mask, is kept as masked text (`exc_text`) only."""
    try:
        message = record.getMessage()
    except Exception:  # logging reports a bad format with its args: mask those too
        message = f"{record.msg} {record.args}"
    masked = credentials.mask(message)
    changed = masked != message
    args = record.args
    if not changed and args:
        values = args.values() if isinstance(args, dict) else args
        changed = any(_mask_value(value)[0] for value in values)
    if changed:
        record.msg = masked
        record.args = ()
    if record.exc_info and record.exc_info[0] is not None:
        text = record.exc_text or _formatter.formatException(record.exc_info)
        masked_text = credentials.mask(text)
        if masked_text != text:
            # The exception object itself (its message holds the signed URL) would
            # be formatted again by handlers that read exc_info: they get the text.
            record.exc_text = masked_text
            record.exc_info = None
    elif record.exc_text:
        record.exc_text = credentials.mask(record.exc_text)
    if record.stack_info:
        record.stack_info = credentials.mask(record.stack_info)
    for key, value in list(vars(record).items()):
        if key not in _STANDARD and isinstance(value, str):
            setattr(record, key, credentials.mask(value))


class RedactingFilter(logging.Filter):
    """Masks every record a handler gets (for OpenTelemetry log bridges)."""

    def filter(self, record: logging.LogRecord) -> bool:
        with contextlib.suppress(Exception):  # masking must never lose a log line
            mask_record(record)
        return True


class _Factory:
    """The record factory: makes the record with the factory it wraps, then masks
    it if it comes from one of the redacted loggers."""

    def __init__(self, wrapped: Any) -> None:
        self.wrapped = wrapped
        self.active = True

    def __call__(self, *args: Any, **kwargs: Any) -> logging.LogRecord:
        record: logging.LogRecord = self.wrapped(*args, **kwargs)
        if not self.active:
            return record
        name = record.name
        if name in _names or (isinstance(name, str) and name.startswith(_prefixes)):
            with contextlib.suppress(Exception):  # masking must never lose a log line
                mask_record(record)
        _watch_bridges()
        return record


_lock = threading.Lock()
_enabled: bool | None = None  # None: TICKSCOPE_SHIM_REDACT_LOGS decides
_factory: _Factory | None = None
_names: frozenset[str] = frozenset(REDACTED_LOGGERS)
_prefixes: tuple[str, ...] = tuple(f"{name}." for name in REDACTED_LOGGERS)
_bridge_filter = RedactingFilter()
_root_handlers_seen: tuple[int, int] = (0, 0)


def enabled() -> bool:
    if _enabled is not None:
        return _enabled
    return settings.env_flag(settings.REDACT_LOGS_ENV, True)


def set_enabled(value: bool | None) -> None:
    """True or False overrides TICKSCOPE_SHIM_REDACT_LOGS; None defers to it.
    False also uninstalls."""
    global _enabled
    _enabled = value
    if value is False:
        uninstall()


def is_installed() -> bool:
    return _factory is not None and _factory.active


def add_logger(name: str) -> None:
    """Mask the records of logger `name` (and its children) too."""
    global _names, _prefixes
    if not name or name in _names:
        return
    with _lock:
        _names = _names | {name}
        _prefixes = (*_prefixes, f"{name}.")


def _is_bridge(handler: logging.Handler) -> bool:
    return type(handler).__module__.startswith("opentelemetry.")


def _watch_bridges() -> None:
    """Put the masking filter on OpenTelemetry log bridges of the root logger; the
    check is two integer comparisons unless the root's handlers changed."""
    global _root_handlers_seen
    handlers = logging.getLogger().handlers
    seen = (id(handlers), len(handlers))
    if seen == _root_handlers_seen:
        return
    _root_handlers_seen = seen
    for handler in list(handlers):
        if _is_bridge(handler) and _bridge_filter not in handler.filters:
            handler.addFilter(_bridge_filter)


def install() -> bool:
    """Install the masking (once; idempotent). Returns whether it is installed:
    False when switched off."""
    global _factory, _root_handlers_seen
    if not enabled():
        return False
    with _lock:
        if _factory is not None and _factory.active:
            return True
        current = logging.getLogRecordFactory()
        if isinstance(current, _Factory):
            current.active = True
            _factory = current
        else:
            _factory = _Factory(current)
            logging.setLogRecordFactory(_factory)
        _root_handlers_seen = (0, 0)
    _watch_bridges()
    return True


def uninstall() -> None:
    """Stop masking. The factory is unwound if nothing wrapped it since; otherwise
    it stays in the chain, passing records through."""
    global _factory
    with _lock:
        factory, _factory = _factory, None
        if factory is None:
            return
        factory.active = False
        if logging.getLogRecordFactory() is factory:
            logging.setLogRecordFactory(factory.wrapped)
    for handler in logging.getLogger().handlers:
        if _bridge_filter in handler.filters:
            handler.removeFilter(_bridge_filter)
