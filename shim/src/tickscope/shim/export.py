"""The SDK side of delivery: OTLP exporters, the span processor, and the gate.

Used by configure() (tickscope.shim.setup) and by the configurator that
opentelemetry-instrument loads (tickscope.shim.distro); the instrumentation
never imports this module (it asks tickscope.shim.gate, which has no SDK).

The gate: when the sidecar is down, every span the engine makes is queued, then
dropped when the queue is full; making it costs CPU on the engine's hot path for
nothing. The gate wraps the span exporter: after an export fails it closes, and
the instrumentation stops making spans, except one per `probe_interval`, which
keeps the exporter trying; the first export that succeeds opens it again.
Skipped spans are counted (`skipped`, and the engine.telemetry.spans.skipped
counter, reported once metrics flow again).

The span processor exports through tickscope.shim.fastexport when the exporter
is the stock OTLP/HTTP one: the same requests, encoded for a fraction of the
stock encoder's CPU (TICKSCOPE_SHIM_FAST_EXPORT=false turns it off).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from opentelemetry.metrics import MeterProvider, Observation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from tickscope.shim import fastexport, gate, settings
from tickscope.shim.version import __version__

__all__ = [
    "ExportGate",
    "GatedExporter",
    "batch_processor",
    "exporters",
    "install_gate",
    "protocol",
]


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

    def __init__(self, exporter: SpanExporter, export_gate: ExportGate) -> None:
        self._exporter = exporter
        self.gate = export_gate

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


def install_gate(export_gate: ExportGate, meter_provider: MeterProvider) -> None:
    """Make the instrumentation ask `export_gate`, and report what it skipped."""
    gate.set_hook(export_gate.allow)
    meter_provider.get_meter("tickscope.shim", __version__).create_observable_counter(
        "engine.telemetry.spans.skipped",
        [lambda _: [Observation(export_gate.skipped)]],
        unit="{span}",
        description="Spans not made while the sidecar could not be reached.",
    )


def protocol(chosen: str | None) -> str:
    value = (
        chosen
        or settings.env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if value not in ("http/protobuf", "grpc"):
        raise ValueError(f"unsupported OTLP protocol {value!r}: use 'http/protobuf' or 'grpc'")
    return value


def exporters(
    chosen_protocol: str, endpoint: str | None, timeout: float, meter_provider: MeterProvider | None
) -> tuple[Any, Any]:
    """(span exporter, metric exporter), honouring OTEL_EXPORTER_OTLP_* when no
    endpoint is given; the default is the sidecar on 127.0.0.1 (the SDK's own
    default, localhost, may resolve to ::1 first, where the sidecar does not listen)."""
    env_traces = settings.env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    env_metrics = settings.env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if chosen_protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        base = endpoint or settings.DEFAULT_GRPC_ENDPOINT
        traces = None if endpoint is None and env_traces else base
        metrics_endpoint = None if endpoint is None and env_metrics else base
        insecure = not (endpoint or env_traces or base).startswith("https://")
        return (
            OTLPSpanExporter(endpoint=traces, insecure=insecure, timeout=timeout),
            OTLPMetricExporter(endpoint=metrics_endpoint, insecure=insecure, timeout=timeout),
        )
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPSpanExporter,
    )

    base = (endpoint or settings.DEFAULT_HTTP_ENDPOINT).rstrip("/")
    traces_url = None if endpoint is None and env_traces else f"{base}/v1/traces"
    metrics_url = None if endpoint is None and env_metrics else f"{base}/v1/metrics"
    return (
        HTTPSpanExporter(endpoint=traces_url, timeout=timeout, meter_provider=meter_provider),
        HTTPMetricExporter(endpoint=metrics_url, timeout=timeout),
    )


def batch_processor(
    exporter: SpanExporter,
    *,
    export_gate: ExportGate | None,
    meter_provider: MeterProvider | None,
    max_queue_size: int | None = None,
    max_export_batch_size: int | None = None,
    schedule_delay_millis: int | None = None,
) -> BatchSpanProcessor:
    """The span processor both setups use: a BatchSpanProcessor (bounded queue,
    drops counted) in front of `exporter`, gated when `export_gate` is given.
    None leaves a setting to the SDK (and so to OTEL_BSP_*). A stock OTLP/HTTP
    exporter is wrapped in fastexport.FastSpanExporter (fastexport.wrap)."""
    exporter = fastexport.wrap(exporter)
    if export_gate is not None:
        exporter = GatedExporter(exporter, export_gate)
    if max_queue_size is not None and max_export_batch_size is not None:
        # The SDK refuses a batch larger than the queue.
        max_export_batch_size = min(max_export_batch_size, max_queue_size)
    return BatchSpanProcessor(
        exporter,
        max_queue_size=max_queue_size,
        schedule_delay_millis=schedule_delay_millis,
        max_export_batch_size=max_export_batch_size,
        meter_provider=meter_provider,
    )
