"""Logging: one JSON object per line by default, plain text on request.

Extra fields passed as `extra={...}` become keys of the JSON object (or key=value
pairs in text), so log lines can be filtered on `collector`, `process`, ...
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

from pydantic import Field

from tickscope.core.configtypes import Duration, StrictModel

__all__ = ["RATE_LIMITED_LOGGERS", "LoggingConfig", "RateLimitFilter", "setup_logging"]

# aiohttp logs every malformed request, on every port, at ERROR with a
# traceback ("Error handling request"): a client's mistake, as often as a
# client cares to make it. These loggers go through RateLimitFilter.
RATE_LIMITED_LOGGERS = ("aiohttp.server", "aiohttp.web", "aiohttp.internal")

# Attributes every LogRecord has; anything else on a record came from `extra`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


class LoggingConfig(StrictModel):
    level: Literal["debug", "info", "warning", "error"] = Field("info", description="Log level.")
    format: Literal["json", "text"] = Field(
        "json", description="One JSON object per line, or plain text for people."
    )
    rate_limit_interval: Annotated[Duration, Field(le=86400, allow_inf_nan=False)] = Field(
        10.0,
        description="aiohttp's own messages (malformed HTTP on any port, client errors) are "
        "logged at most once per this interval per message, with the number suppressed "
        "since; client mistakes are logged as warnings without a traceback.",
    )


class RateLimitFilter(logging.Filter):
    """At most one record per message template per `interval`; the one let through
    carries `suppressed`, how many were dropped since the last. A record whose
    exception is a client's malformed HTTP (or a dropped connection) is
    downgraded to WARNING, its traceback replaced by the error's class."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._last: dict[tuple[str, str], float] = {}
        self._suppressed: dict[tuple[str, str], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = self._clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            self._last[key] = now
            suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            record.suppressed = suppressed
        if record.exc_info and _client_error(record.exc_info[1]):
            error = record.exc_info[1]
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            # The class and status only: aiohttp's message quotes the offending
            # request line or header, which can be a credential.
            record.error = type(error).__name__
            if isinstance(code := getattr(error, "code", None), int):
                record.status = code
            record.exc_info = None
            record.exc_text = None
        return True


def _client_error(exc: BaseException | None) -> bool:
    # Imported here: logging is set up before anything imports aiohttp.
    from aiohttp.http_exceptions import HttpProcessingError

    return isinstance(exc, HttpProcessingError | ConnectionError)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


def _timestamp(record: logging.LogRecord) -> str:
    seconds = int(record.created)
    millis = int((record.created - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str, separators=(",", ":"))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(config: LoggingConfig) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if config.format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    # aiohttp's access log is one line per scrape and probe: noise, not events.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
    limiter = RateLimitFilter(config.rate_limit_interval)
    for name in RATE_LIMITED_LOGGERS:
        logger = logging.getLogger(name)
        # Called again (tests, a second run in one process): one filter, not two.
        for old in [f for f in logger.filters if isinstance(f, RateLimitFilter)]:
            logger.removeFilter(old)
        logger.addFilter(limiter)
