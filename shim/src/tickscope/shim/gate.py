"""The instrumentation's one question to the export side: make this span or not?

The instrumentation (ccxt.py, helpers.py) uses the OpenTelemetry API only, as
OpenTelemetry's contrib guidelines ask, so it cannot see whether the SDK's
exports succeed. The side that built the exporter (configure(), or the
configurator opentelemetry-instrument loads) installs a hook here; without one,
every span is made (an engine with its own OpenTelemetry setup decides delivery
itself). See tickscope.shim.export for the gate behind the hook.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["allow", "installed", "set_hook"]

_hook: Callable[[], bool] | None = None


def allow() -> bool:
    """Whether the next span should be made. One global read when no hook is set."""
    hook = _hook
    return hook is None or hook()


def set_hook(hook: Callable[[], bool] | None) -> None:
    global _hook
    _hook = hook


def installed() -> Callable[[], bool] | None:
    return _hook
