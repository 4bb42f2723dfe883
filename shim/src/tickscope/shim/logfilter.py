"""Keeps OpenTelemetry's own warnings from flooding the engine's log.

With the sidecar down, the SDK logs "Queue full, dropping Span." for every span
it drops, and the exporter a warning for every failed export: at thousands of
spans a second that is thousands of log lines (and the CPU to format them) in the
engine. This filter lets each distinct message through once per interval and
says how many it held back.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["RateLimitFilter", "install"]

# The loggers (module names) the SDK's processors and the OTLP exporters warn on.
# A filter on a logger sees only records logged on that very logger, so each is listed.
OTEL_LOGGERS = (
    "opentelemetry.sdk._shared_internal",
    "opentelemetry.sdk.trace.export",
    "opentelemetry.sdk.metrics._internal.export",
    "opentelemetry.exporter.otlp.proto.http._common",
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
    "opentelemetry.exporter.otlp.common.http",
)


class RateLimitFilter(logging.Filter):
    def __init__(self, interval: float = 60.0) -> None:
        super().__init__()
        self.interval = interval
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, str(record.msg))
        now = time.monotonic()
        with self._lock:
            last, held = self._seen.get(key, (0.0, 0))
            if now - last < self.interval:
                self._seen[key] = (last, held + 1)
                return False
            self._seen[key] = (now, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {self.interval:.0f}s)"
        return True


_installed: RateLimitFilter | None = None


def install(interval: float = 60.0) -> RateLimitFilter:
    global _installed
    if _installed is None:
        _installed = RateLimitFilter(interval)
        for name in OTEL_LOGGERS:
            logging.getLogger(name).addFilter(_installed)
    return _installed
