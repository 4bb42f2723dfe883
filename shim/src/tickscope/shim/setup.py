"""`configure` and `shutdown`: the engine's OpenTelemetry providers, pointed at the sidecar.

Nothing happens until `configure` is called: importing the shim sends nothing
anywhere. Telemetry goes only where the operator points it: the endpoint given,
else the standard OTEL_EXPORTER_OTLP_* variables, else the sidecar on
127.0.0.1. The engine is never blocked by it: spans wait in a bounded queue
that a background thread exports; when the queue is full (the sidecar is down
or slow), new spans are dropped and counted by the SDK
(otel.sdk.processor.span.processed with error.type="queue_full"); once an export
has failed, the instrumentation stops making spans at all until one gets
through again (shim/gate.py), so a down sidecar costs the engine almost nothing.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import Observation
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from tickscope.shim import gate, logfilter
from tickscope.shim.version import __version__

__all__ = ["Telemetry", "configure", "configured_rate_limits", "is_configured", "shutdown"]

log = logging.getLogger("tickscope.shim")

DEFAULT_HTTP_ENDPOINT = "http://127.0.0.1:4318"
DEFAULT_GRPC_ENDPOINT = "http://127.0.0.1:4317"
DEFAULT_SERVICE_NAME = "trading-engine"

# Kubernetes downward-API variables the Helm chart sets -> resource attributes.
_K8S_ENV = {
    "k8s.pod.name": ("K8S_POD_NAME", "POD_NAME"),
    "k8s.namespace.name": ("K8S_NAMESPACE", "POD_NAMESPACE"),
    "k8s.node.name": ("K8S_NODE_NAME", "NODE_NAME"),
    "k8s.container.name": ("K8S_CONTAINER_NAME",),
}


@dataclass
class Telemetry:
    """What `configure` set up."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    resource: Resource
    protocol: str
    rate_limits: dict[str, float] = field(default_factory=dict)


_lock = threading.Lock()
_current: Telemetry | None = None


def is_configured() -> bool:
    return _current is not None


def configured_rate_limits() -> dict[str, float] | None:
    return _current.rate_limits if _current is not None else None


def _env(*names: str) -> str | None:
    for name in names:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


def _resource(
    service_name: str | None, service_version: str | None, extra: Mapping[str, Any] | None
) -> Resource:
    attributes: dict[str, Any] = {
        "service.name": service_name or _env("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME,
        "host.name": socket.gethostname(),
        "process.pid": os.getpid(),
        "telemetry.distro.name": "tickscope-shim",
        "telemetry.distro.version": __version__,
    }
    if service_version:
        attributes["service.version"] = service_version
    for key, names in _K8S_ENV.items():
        value = _env(*names)
        if value:
            attributes[key] = value
    attributes.update(extra or {})
    # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; what is given here wins.
    return Resource.create(attributes)


def _protocol(protocol: str | None) -> str:
    chosen = (
        protocol
        or _env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    )
    if chosen not in ("http/protobuf", "grpc"):
        raise ValueError(f"unsupported OTLP protocol {chosen!r}: use 'http/protobuf' or 'grpc'")
    return chosen


def _exporters(
    protocol: str, endpoint: str | None, timeout: float, meter_provider: MeterProvider | None
) -> tuple[Any, Any]:
    """(span exporter, metric exporter), honouring OTEL_EXPORTER_OTLP_* when no
    endpoint is given; the default is the sidecar on 127.0.0.1 (the SDK's own
    default, localhost, may resolve to ::1 first, where the sidecar does not listen)."""
    env_traces = _env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    env_metrics = _env("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        base = endpoint or DEFAULT_GRPC_ENDPOINT
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

    base = (endpoint or DEFAULT_HTTP_ENDPOINT).rstrip("/")
    traces_url = None if endpoint is None and env_traces else f"{base}/v1/traces"
    metrics_url = None if endpoint is None and env_metrics else f"{base}/v1/metrics"
    return (
        HTTPSpanExporter(endpoint=traces_url, timeout=timeout, meter_provider=meter_provider),
        HTTPMetricExporter(endpoint=metrics_url, timeout=timeout),
    )


def configure(
    service_name: str | None = None,
    endpoint: str | None = None,
    *,
    protocol: str | None = None,
    service_version: str | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    max_queue_size: int = 4096,
    max_export_batch_size: int = 512,
    schedule_delay_millis: int = 1000,
    export_timeout: float = 5.0,
    metric_export_interval_millis: int = 10_000,
    instrument_ccxt: bool = True,
    runtime_metrics: bool = True,
    rate_limits: Mapping[str, float] | None = None,
    span_processors: Iterable[SpanProcessor] = (),
    metric_readers: Iterable[MetricReader] = (),
) -> Telemetry:
    """Set up OpenTelemetry for the engine and return what was set up. Idempotent:
    a second call returns the first call's setup unchanged.

    - endpoint: the OTLP base URL (http://host:4318 for HTTP, http://host:4317 for
      gRPC); default: OTEL_EXPORTER_OTLP_ENDPOINT, else the sidecar on 127.0.0.1.
    - protocol: "http/protobuf" (default) or "grpc"; default OTEL_EXPORTER_OTLP_PROTOCOL.
    - max_queue_size: spans held for export; past it new spans are dropped and counted.
    - instrument_ccxt: instrument every ccxt exchange created after this call.
    - runtime_metrics: record the engine's GC, thread and memory figures.
    - rate_limits: request budgets per exchange id where headers carry only the used part.
    - span_processors / metric_readers: extra ones (tests use in-memory ones).
    """
    global _current
    with _lock:
        if _current is not None:
            return _current
        # The SDK counts what its processors drop only with its self-metrics on.
        os.environ.setdefault("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
        logfilter.install()
        chosen = _protocol(protocol)
        resource = _resource(service_name, service_version, resource_attributes)
        # The metric reader needs its exporter first; the span exporter reports into the
        # meter provider, so that is built first with the readers it will have.
        span_exporter, metric_exporter = _exporters(chosen, endpoint, export_timeout, None)
        export_gate = gate.ExportGate()
        span_exporter = gate.GatedExporter(span_exporter, export_gate)
        readers: list[MetricReader] = [
            PeriodicExportingMetricReader(
                metric_exporter, export_interval_millis=metric_export_interval_millis
            ),
            *metric_readers,
        ]
        meter_provider = MeterProvider(resource=resource, metric_readers=readers)
        tracer_provider = TracerProvider(resource=resource)
        tracer_provider.add_span_processor(
            BatchSpanProcessor(
                span_exporter,
                max_queue_size=max_queue_size,
                schedule_delay_millis=schedule_delay_millis,
                # The SDK refuses a batch larger than the queue.
                max_export_batch_size=min(max_export_batch_size, max_queue_size),
                meter_provider=meter_provider,
            )
        )
        for processor in span_processors:
            tracer_provider.add_span_processor(processor)
        trace.set_tracer_provider(tracer_provider)
        metrics.set_meter_provider(meter_provider)
        gate.GATE = export_gate
        meter_provider.get_meter("tickscope.shim", __version__).create_observable_counter(
            "engine.telemetry.spans.skipped",
            [lambda _: [Observation(export_gate.skipped)]],
            unit="{span}",
            description="Spans not made while the sidecar could not be reached.",
        )
        telemetry = Telemetry(
            tracer_provider, meter_provider, resource, chosen, dict(rate_limits or {})
        )
        _current = telemetry
    if runtime_metrics:
        from tickscope.shim.runtime import record_runtime_metrics

        record_runtime_metrics(meter_provider)
    if instrument_ccxt:
        try:
            from tickscope.shim.ccxt import instrument_ccxt as _instrument_ccxt

            _instrument_ccxt(tracer_provider, telemetry.rate_limits)
        except ImportError:  # an engine without ccxt: nothing to instrument
            pass
    log.info(
        "telemetry configured",
        extra={"service_name": resource.attributes.get("service.name"), "protocol": chosen},
    )
    return telemetry


def shutdown(timeout_millis: int = 5000) -> None:
    """Flush and stop exporting. Spans still queued get `timeout_millis` to leave."""
    global _current
    with _lock:
        telemetry, _current = _current, None
    if telemetry is None:
        return
    gate.GATE = None
    try:
        telemetry.tracer_provider.force_flush(timeout_millis)
        telemetry.tracer_provider.shutdown()
        telemetry.meter_provider.shutdown(timeout_millis=timeout_millis)
    except Exception:  # never let telemetry fail the engine's exit
        log.warning("telemetry shutdown did not complete", exc_info=False)
