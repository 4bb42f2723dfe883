"""What the ccxt instrumentation instruments, as opentelemetry-python-contrib
declares it in each instrumentation's package.py: the auto-instrumentation
checks it (and the distribution's `instruments` extra) before loading the
instrumentor, and skips it when ccxt is missing or too old."""

from __future__ import annotations

_instruments = ("ccxt >= 4.3",)

# The instrumentor records a metric of its own (ccxt.exchange.instrumented).
_supports_metrics = True
