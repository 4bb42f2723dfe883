"""tickscope's engine-side shim: OpenTelemetry for ccxt and engine code.

With no code change::

    opentelemetry-instrument python bot.py   # tickscope-shim installed: to the sidecar

(the distro and configurator in tickscope.shim.distro set the sidecar on
127.0.0.1 as the default, and the `ccxt` instrumentor instruments every
exchange). Or two lines in the engine::

    from tickscope import shim
    shim.configure(service_name="my-bot")   # then create ccxt exchanges as usual

`configure` sets up the OpenTelemetry SDK (spans and metrics over OTLP to the
sidecar on 127.0.0.1, or where OTEL_EXPORTER_OTLP_* point), or joins the
providers already set (see tickscope.shim.setup), and instruments every ccxt
exchange created afterwards. An engine with its own OpenTelemetry setup uses
`CcxtInstrumentor().instrument()`, `instrument_ccxt()` or
`instrument_exchange(exchange)` instead: like every OpenTelemetry
instrumentation, they use the global TracerProvider unless given one.

The engine's loop reports that it still turns with `shim.heartbeat("main")` once
per iteration (or `with shim.loop("main"):` / `@shim.loop("main")` around one
iteration); the sidecar's /engine/healthz, the engine container's liveness probe,
answers from it (tickscope.shim.heartbeat).

The shim never records credentials, signatures, URLs' query strings, request
bodies or exception messages (see shim/redact.py), and masks the credentials of
the exchanges it instruments in logs (shim/logredact.py).
"""

from typing import TYPE_CHECKING, Any

from tickscope.shim.ccxt import (
    instrument_ccxt,
    instrument_exchange,
    is_instrumented,
    uninstrument_ccxt,
    uninstrument_exchange,
)
from tickscope.shim.heartbeat import Heartbeats, heartbeat, loop
from tickscope.shim.helpers import CacheMetrics, cache_metrics, queue_gauge, traced
from tickscope.shim.instrumentation import CcxtInstrumentor
from tickscope.shim.version import __version__

if TYPE_CHECKING:
    from tickscope.shim.setup import Telemetry, configure, is_configured, shutdown

# configure() and friends need the OpenTelemetry SDK; the instrumentation needs the
# API only. They are loaded when first used, so that opentelemetry-instrument
# loading the instrumentor (tickscope.shim.instrumentation) imports no SDK through
# this package.
_SETUP_NAMES = frozenset({"Telemetry", "configure", "is_configured", "shutdown"})


def __getattr__(name: str) -> Any:
    if name in _SETUP_NAMES:
        from tickscope.shim import setup

        return getattr(setup, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CacheMetrics",
    "CcxtInstrumentor",
    "Heartbeats",
    "Telemetry",
    "__version__",
    "cache_metrics",
    "configure",
    "heartbeat",
    "instrument_ccxt",
    "instrument_exchange",
    "is_configured",
    "is_instrumented",
    "loop",
    "queue_gauge",
    "shutdown",
    "traced",
    "uninstrument_ccxt",
    "uninstrument_exchange",
]
