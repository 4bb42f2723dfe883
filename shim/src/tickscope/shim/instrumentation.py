"""CcxtInstrumentor: the ccxt instrumentation as a standard OpenTelemetry instrumentor.

    from tickscope.shim import CcxtInstrumentor
    CcxtInstrumentor().instrument()          # every ccxt exchange created from now on

or, with no code change at all, ``opentelemetry-instrument python bot.py``: the
`opentelemetry_instrumentor` entry point `ccxt` (shim/pyproject.toml) points
here, and the auto-instrumentation calls instrument() with no arguments, so
everything it needs comes from the global providers and the environment.

instrument() takes, like the contrib instrumentations:
- tracer_provider: where the spans go (default: the global TracerProvider);
- meter_provider: where the instrumentor's metric goes (default: the global one):
  ccxt.exchange.instrumented{exchange.id}, the instrumented exchanges alive, which
  shows an engine that creates exchanges and never closes them;
and the shim's own options:
- rate_limits: request budgets per exchange id (also TICKSCOPE_SHIM_RATE_LIMITS);
- redact_logs: mask credentials and signatures in logs (default: on, or
  TICKSCOPE_SHIM_REDACT_LOGS); see tickscope.shim.logredact.

uninstrument() puts ccxt back: exchanges are created plain again, those the
instrumentor instrumented are restored, and log masking is removed.

OpenTelemetry API only (no SDK import), as the contrib guidelines require.
"""

from __future__ import annotations

import threading
import weakref
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any

from opentelemetry import metrics

# The module starts with a bare `# type: ignore`, so mypy sees none of its names.
from opentelemetry.instrumentation.instrumentor import BaseInstrumentor  # type: ignore[attr-defined]
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from tickscope.shim import ccxt as ccxt_instrumentation
from tickscope.shim import credentials, logredact
from tickscope.shim.package import _instruments
from tickscope.shim.version import __version__

__all__ = ["CcxtInstrumentor"]

_meters_lock = threading.Lock()
# Meter providers the exchanges gauge is registered with (an observable instrument
# cannot be removed: it reports nothing while uninstrumented, and is made once).
_gauged: weakref.WeakSet[Any] = weakref.WeakSet()


def _observe_exchanges(_: CallbackOptions) -> Iterable[Observation]:
    if not CcxtInstrumentor().is_instrumented_by_opentelemetry:
        return []
    counts = Counter(
        str(getattr(exchange, "id", "unknown"))
        for exchange in credentials.registered()
        if ccxt_instrumentation.is_instrumented(exchange)
    )
    return [Observation(count, {"exchange.id": name}) for name, count in sorted(counts.items())]


class CcxtInstrumentor(BaseInstrumentor):  # type: ignore[misc]  # BaseInstrumentor is untyped
    """An instrumentor for ccxt (sync `ccxt` and `ccxt.async_support`)."""

    def instrumentation_dependencies(self) -> Collection[str]:
        return _instruments

    # Whether instrument() installed the log masking (uninstrument() then removes it;
    # masking installed before, by configure() or instrument_exchange, stays).
    _installed_redaction = False

    def _instrument(self, **kwargs: Any) -> None:
        redact_logs = kwargs.get("redact_logs")
        if redact_logs is not None:
            logredact.set_enabled(bool(redact_logs))
        already = logredact.is_installed()
        type(self)._installed_redaction = logredact.install() and not already
        rate_limits = kwargs.get("rate_limits")
        if rate_limits is not None:
            ccxt_instrumentation.set_rate_limits(rate_limits)
        meter_provider: MeterProvider = kwargs.get("meter_provider") or metrics.get_meter_provider()
        with _meters_lock:
            if meter_provider not in _gauged:
                _gauged.add(meter_provider)
                meter = metrics.get_meter(
                    ccxt_instrumentation.INSTRUMENTATION_NAME,
                    __version__,
                    meter_provider=meter_provider,
                )
                meter.create_observable_up_down_counter(
                    "ccxt.exchange.instrumented",
                    [_observe_exchanges],
                    unit="{exchange}",
                    description="Instrumented ccxt exchanges alive, by exchange id.",
                )
        # The clock-skew, market-data and account metrics of the exchanges patched
        # below go to the provider given here (None: the global one).
        ccxt_instrumentation.set_meter_provider(kwargs.get("meter_provider"))
        ccxt_instrumentation.patch_exchanges(kwargs.get("tracer_provider"), None)

    def _uninstrument(self, **kwargs: Any) -> None:
        ccxt_instrumentation.unpatch_exchanges()
        ccxt_instrumentation.set_meter_provider(None)
        if type(self)._installed_redaction:
            type(self)._installed_redaction = False
            logredact.uninstall()
