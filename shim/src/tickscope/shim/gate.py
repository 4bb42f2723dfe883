"""Skip building spans while they cannot be delivered.

When the sidecar is down, every span the engine makes is queued, then dropped
when the queue is full; making it cost CPU on the engine's hot path for
nothing. The gate wraps the span exporter: after an export fails it closes, and
the instrumentation stops making spans, except one per `probe_interval`, which
keeps the exporter trying; the first export that succeeds opens it again.
Skipped spans are counted (`skipped`, and the engine.telemetry.spans.skipped
counter, reported once metrics flow again).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

__all__ = ["ExportGate", "GatedExporter", "allow"]


class ExportGate:
    def __init__(self, probe_interval: float = 1.0) -> None:
        self.probe_interval = probe_interval
        self.open = True
        self.skipped = 0
        self._next_probe = 0.0
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """Whether the next span should be made. Cheap when open: one attribute read."""
        if self.open:
            return True
        now = time.monotonic()
        with self._lock:
            if now >= self._next_probe:
                self._next_probe = now + self.probe_interval
                return True
            self.skipped += 1
            return False

    def report(self, success: bool) -> None:
        if success:
            self.open = True
        elif self.open:
            self.open = False
            self._next_probe = time.monotonic() + self.probe_interval


class GatedExporter(SpanExporter):
    """A span exporter that tells the gate how its exports go."""

    def __init__(self, exporter: SpanExporter, gate: ExportGate) -> None:
        self._exporter = exporter
        self.gate = gate

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self._exporter.export(spans)
        except Exception:
            self.gate.report(False)
            raise
        self.gate.report(result is SpanExportResult.SUCCESS)
        return result

    def shutdown(self) -> None:
        self._exporter.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self._exporter.force_flush(timeout_millis)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._exporter, name)


# The gate of the exporter `shim.configure` set up; None without configure (an
# engine with its own OpenTelemetry setup decides delivery itself).
GATE: ExportGate | None = None


def allow() -> bool:
    gate = GATE
    return gate is None or gate.allow()
