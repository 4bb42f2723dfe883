"""tickscope's engine-side shim: OpenTelemetry for ccxt and engine code.

The engine imports this package; the sidecar never does. Its public API
(configure, shutdown, instrument_exchange, traced, ...) arrives with the shim issue.
"""

__all__: list[str] = []
