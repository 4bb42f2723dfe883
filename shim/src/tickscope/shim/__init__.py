"""tickscope's engine-side shim: OpenTelemetry for ccxt and engine code.

Two lines make every exchange call visible in the sidecar::

    from tickscope import shim
    shim.configure(service_name="my-bot")   # then create ccxt exchanges as usual

`configure` sets up the OpenTelemetry SDK (spans and metrics over OTLP to the
sidecar on 127.0.0.1, or where OTEL_EXPORTER_OTLP_* point) and instruments every
ccxt exchange created afterwards. An engine with its own OpenTelemetry setup
calls `instrument_exchange(exchange)` or `instrument_ccxt()` instead: like every
OpenTelemetry instrumentation, they use the global TracerProvider unless given one.

The shim never records credentials, signatures, URLs' query strings, request
bodies or exception messages (see shim/redact.py).
"""

from tickscope.shim.ccxt import (
    instrument_ccxt,
    instrument_exchange,
    is_instrumented,
    uninstrument_ccxt,
    uninstrument_exchange,
)
from tickscope.shim.helpers import CacheMetrics, cache_metrics, queue_gauge, traced
from tickscope.shim.setup import Telemetry, configure, is_configured, shutdown
from tickscope.shim.version import __version__

__all__ = [
    "CacheMetrics",
    "Telemetry",
    "__version__",
    "cache_metrics",
    "configure",
    "instrument_ccxt",
    "instrument_exchange",
    "is_configured",
    "is_instrumented",
    "queue_gauge",
    "shutdown",
    "traced",
    "uninstrument_ccxt",
    "uninstrument_exchange",
]
