"""`configure` and `shutdown`: the engine's OpenTelemetry providers, pointed at the sidecar.

Nothing happens until `configure` is called: importing the shim sends nothing
anywhere. Telemetry goes only where the operator points it: the endpoint given,
else the standard OTEL_EXPORTER_OTLP_* variables, else the sidecar on
127.0.0.1. The engine is never blocked by it: spans wait in a bounded queue
that a background thread exports; when the queue is full (the sidecar is down
or slow), new spans are dropped and counted by the SDK
(otel.sdk.processor.span.processed with error.type="queue_full"); once an export
has failed, the instrumentation stops making spans at all until one gets
through again (tickscope.shim.export), so a down sidecar costs the engine almost nothing.

One provider for everything: configure() looks at the global TracerProvider first.

- none set: it creates a TracerProvider and a MeterProvider exporting to the
  sidecar, and sets them global (mode "created");
- set by tickscope's configurator (opentelemetry-instrument with tickscope-shim
  installed): it uses them; they export where OTEL_* say (mode
  "opentelemetry-instrument");
- an SDK TracerProvider set by anyone else (the engine's own setup, another
  distro): it adds its span processor, exporting to the sidecar, to that provider
  (mode "added"), unless add_to_existing=False, or None (the default) under
  opentelemetry-instrument, whose providers already export where OTEL_* say:
  then it uses it as it is (mode "existing");
- any other TracerProvider (not the SDK's): used as it is (mode "existing").

configure()'s own provider, `traced` and the ccxt spans then all use the global
provider; each case is logged once on the "tickscope.shim" logger, and
docs/shim.md has the table.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider

from tickscope.shim import account, export, gate, logfilter, logredact, settings
from tickscope.shim import ccxt as ccxt_instrumentation
from tickscope.shim.resource import engine_resource

__all__ = ["Telemetry", "configure", "is_configured", "shutdown"]

log = logging.getLogger("tickscope.shim")

DEFAULT_HTTP_ENDPOINT = settings.DEFAULT_HTTP_ENDPOINT
DEFAULT_GRPC_ENDPOINT = settings.DEFAULT_GRPC_ENDPOINT
DEFAULT_SERVICE_NAME = settings.DEFAULT_SERVICE_NAME

CREATED = "created"
ADDED = "added"
EXISTING = "existing"
AUTO = "opentelemetry-instrument"


@dataclass
class Telemetry:
    """What `configure` set up, or found.

    - mode: "created", "added", "existing" or "opentelemetry-instrument" (module doc);
    - tracer_provider, meter_provider: the global ones everything uses;
    - resource: the tracer provider's resource (None for a provider not the SDK's);
    - protocol: the OTLP protocol of the exporter configure() made, if it made one;
    - export_gate: the gate the instrumentation asks, when the shim owns the exporter;
    - span_processor: the processor configure() added to a provider it found.
    """

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    resource: Resource | None
    protocol: str | None
    rate_limits: dict[str, float] = field(default_factory=dict)
    mode: str = CREATED
    export_gate: export.ExportGate | None = None
    span_processor: SpanProcessor | None = None
    owns_meter_provider: bool = False

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what is queued now (the spans of this process's providers)."""
        target: Any = self.span_processor or self.tracer_provider
        flush = getattr(target, "force_flush", None)
        return bool(flush(timeout_millis)) if callable(flush) else True


_lock = threading.Lock()
_current: Telemetry | None = None
# What tickscope's configurator set up under opentelemetry-instrument.
_auto: Telemetry | None = None


def is_configured() -> bool:
    return _current is not None


def adopt_auto(telemetry: Telemetry) -> None:
    """Called by tickscope's configurator: the providers it made, for configure()."""
    global _auto
    _auto = telemetry


def _under_opentelemetry_instrument() -> bool:
    # opentelemetry-instrument runs the program with its sitecustomize, which
    # imports this module before the program starts.
    return "opentelemetry.instrumentation.auto_instrumentation" in sys.modules


def _meter_provider_is_set(provider: metrics.MeterProvider) -> bool:
    # The API returns a proxy until a provider is set; its class is not public.
    return type(provider).__name__ != "_ProxyMeterProvider"


def configure(
    service_name: str | None = None,
    endpoint: str | None = None,
    *,
    protocol: str | None = None,
    service_version: str | None = None,
    resource_attributes: Mapping[str, Any] | None = None,
    max_queue_size: int = settings.MAX_QUEUE_SIZE,
    max_export_batch_size: int = settings.MAX_EXPORT_BATCH_SIZE,
    schedule_delay_millis: int = settings.SCHEDULE_DELAY_MILLIS,
    export_timeout: float = 5.0,
    metric_export_interval_millis: int = settings.METRIC_EXPORT_INTERVAL_MILLIS,
    instrument_ccxt: bool = True,
    runtime_metrics: bool = True,
    rate_limits: Mapping[str, float] | None = None,
    redact_logs: bool | None = None,
    account_metrics: bool | None = None,
    add_to_existing: bool | None = None,
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
    - redact_logs: mask credentials and signatures in logs (default: on, unless
      TICKSCOPE_SHIM_REDACT_LOGS=false).
    - account_metrics: record the account's own figures (balances, positions, open
      orders, fills: tickscope.shim.account) as metrics; default off, unless
      TICKSCOPE_SHIM_ACCOUNT_METRICS=true.
    - add_to_existing: with an SDK TracerProvider already set globally, add the
      sidecar's exporter to it (True) or use it as it is (False); default: add,
      except under opentelemetry-instrument.
    - span_processors / metric_readers: extra ones (tests use in-memory ones).
    """
    global _current
    with _lock:
        if _current is not None:
            return _current
        # The SDK counts what its processors drop only with its self-metrics on.
        os.environ.setdefault("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
        logfilter.install()
        if redact_logs is not None:
            logredact.set_enabled(redact_logs)
        logredact.install()
        if account_metrics is not None:
            account.set_enabled(account_metrics)
        ccxt_instrumentation.set_rate_limits(rate_limits)
        options = _Options(
            service_name,
            service_version,
            resource_attributes,
            endpoint,
            protocol,
            max_queue_size,
            max_export_batch_size,
            schedule_delay_millis,
            export_timeout,
            metric_export_interval_millis,
            list(span_processors),
            list(metric_readers),
        )
        found = trace.get_tracer_provider()
        if _auto is not None and found is _auto.tracer_provider:
            telemetry = _use_auto(_auto, options)
        elif isinstance(found, trace.ProxyTracerProvider):
            telemetry = _create(options)
        else:
            add = add_to_existing
            if add is None:
                add = not _under_opentelemetry_instrument()
            telemetry = _join(found, options, add)
        telemetry.rate_limits = dict(rate_limits or {})
        # The exchanges' metrics (clock skew, market data, account) go where configure's go.
        ccxt_instrumentation.set_meter_provider(telemetry.meter_provider)
        _current = telemetry
    if runtime_metrics:
        from tickscope.shim.runtime import record_runtime_metrics

        record_runtime_metrics(telemetry.meter_provider)
    if instrument_ccxt and importlib.util.find_spec("ccxt") is not None:
        from tickscope.shim.instrumentation import CcxtInstrumentor

        instrumentor = CcxtInstrumentor()
        if not instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument(
                tracer_provider=telemetry.tracer_provider,
                meter_provider=telemetry.meter_provider,
            )
    return telemetry


@dataclass
class _Options:
    service_name: str | None
    service_version: str | None
    resource_attributes: Mapping[str, Any] | None
    endpoint: str | None
    protocol: str | None
    max_queue_size: int
    max_export_batch_size: int
    schedule_delay_millis: int
    export_timeout: float
    metric_export_interval_millis: int
    span_processors: list[SpanProcessor]
    metric_readers: list[MetricReader]


def _create(o: _Options) -> Telemetry:
    """No provider set: make both, exporting to the sidecar, and set them global."""
    chosen = export.protocol(o.protocol)
    resource = engine_resource(o.service_name, o.service_version, o.resource_attributes)
    # The metric reader needs its exporter first; the span exporter reports into the
    # meter provider, so that is built first with the readers it will have.
    span_exporter, metric_exporter = export.exporters(chosen, o.endpoint, o.export_timeout, None)
    readers: list[MetricReader] = [
        PeriodicExportingMetricReader(
            metric_exporter, export_interval_millis=o.metric_export_interval_millis
        ),
        *o.metric_readers,
    ]
    meter_provider = MeterProvider(resource=resource, metric_readers=readers)
    tracer_provider = SDKTracerProvider(resource=resource)
    export_gate = export.ExportGate()
    tracer_provider.add_span_processor(
        export.batch_processor(
            span_exporter,
            export_gate=export_gate,
            meter_provider=meter_provider,
            max_queue_size=o.max_queue_size,
            max_export_batch_size=o.max_export_batch_size,
            schedule_delay_millis=o.schedule_delay_millis,
        )
    )
    for processor in o.span_processors:
        tracer_provider.add_span_processor(processor)
    trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    export.install_gate(export_gate, meter_provider)
    log.info(
        "telemetry configured",
        extra={
            "mode": CREATED,
            "service_name": resource.attributes.get("service.name"),
            "protocol": chosen,
        },
    )
    return Telemetry(
        tracer_provider,
        meter_provider,
        resource,
        chosen,
        mode=CREATED,
        export_gate=export_gate,
        owns_meter_provider=True,
    )


def _use_auto(auto: Telemetry, o: _Options) -> Telemetry:
    """opentelemetry-instrument with tickscope's configurator: its providers already
    export where OTEL_* say; configure()'s export arguments have nothing to set."""
    tracer_provider = auto.tracer_provider
    for processor in o.span_processors:
        if isinstance(tracer_provider, SDKTracerProvider):
            tracer_provider.add_span_processor(processor)
    if o.metric_readers:
        log.warning("metric_readers not added: the MeterProvider was set up before configure()")
    log.info(
        "telemetry configured by opentelemetry-instrument: using its providers; "
        "configure()'s endpoint, protocol, resource and batch arguments are not used",
        extra={"mode": AUTO},
    )
    return Telemetry(
        tracer_provider,
        auto.meter_provider,
        auto.resource,
        None,
        mode=AUTO,
        export_gate=auto.export_gate,
    )


def _join(found: trace.TracerProvider, o: _Options, add: bool) -> Telemetry:
    """A TracerProvider was set before configure(): use it, adding the sidecar's
    exporter to it if it is the SDK's and `add`. The instrumentation is not gated
    here: the provider may export elsewhere too, and those spans must not stop
    because the sidecar is down."""
    sdk = isinstance(found, SDKTracerProvider)
    resource = found.resource if isinstance(found, SDKTracerProvider) else None
    meter_provider = metrics.get_meter_provider()
    owns_meter = not _meter_provider_is_set(meter_provider)
    chosen: str | None = None
    processor: SpanProcessor | None = None
    if (add and isinstance(found, SDKTracerProvider)) or owns_meter:
        chosen = export.protocol(o.protocol)
        span_exporter, metric_exporter = export.exporters(
            chosen, o.endpoint, o.export_timeout, None
        )
        if owns_meter:
            # No MeterProvider yet: the sidecar gets the metrics, with the resource
            # of the spans' provider, so that both carry the same service.name.
            meter_provider = MeterProvider(
                resource=resource
                or engine_resource(o.service_name, o.service_version, o.resource_attributes),
                metric_readers=[
                    PeriodicExportingMetricReader(
                        metric_exporter, export_interval_millis=o.metric_export_interval_millis
                    ),
                    *o.metric_readers,
                ],
            )
            metrics.set_meter_provider(meter_provider)
        else:
            metric_exporter.shutdown()
            if o.metric_readers:
                log.warning("metric_readers not added: a MeterProvider was set before configure()")
        if add and isinstance(found, SDKTracerProvider):
            processor = export.batch_processor(
                span_exporter,
                export_gate=None,
                meter_provider=meter_provider,
                max_queue_size=o.max_queue_size,
                max_export_batch_size=o.max_export_batch_size,
                schedule_delay_millis=o.schedule_delay_millis,
            )
            found.add_span_processor(processor)
        else:
            span_exporter.shutdown()
    if isinstance(found, SDKTracerProvider):
        for extra in o.span_processors:
            found.add_span_processor(extra)
    mode = ADDED if processor is not None else EXISTING
    if mode == ADDED:
        log.info(
            "telemetry added to the TracerProvider already set: its spans now go to the "
            "sidecar too",
            extra={
                "mode": mode,
                "protocol": chosen,
                "metrics": "created" if owns_meter else "existing",
            },
        )
    else:
        log.info(
            "using the TracerProvider already set as it is: spans go where it exports them",
            extra={
                "mode": mode,
                "sdk": sdk,
                "metrics": "created" if owns_meter else "existing",
            },
        )
    return Telemetry(
        found,
        meter_provider,
        resource,
        chosen,
        mode=mode,
        span_processor=processor,
        owns_meter_provider=owns_meter,
    )


def shutdown(timeout_millis: int = 5000) -> None:
    """Flush and stop exporting. Spans still queued get `timeout_millis` to leave.

    Only providers configure() created are shut down. A provider it found (the
    engine's own, or opentelemetry-instrument's), with the processor it may have
    added, is flushed and left to its owner.
    """
    global _current
    with _lock:
        telemetry, _current = _current, None
    if telemetry is None:
        return
    ccxt_instrumentation.set_meter_provider(None)
    if telemetry.export_gate is not None and telemetry.mode == CREATED:
        gate.set_hook(None)
    try:
        if telemetry.mode == CREATED:
            provider: Any = telemetry.tracer_provider
            provider.force_flush(timeout_millis)
            provider.shutdown()
        elif telemetry.span_processor is not None:
            # Flushed, not shut down: the SDK cannot take a processor out of a
            # provider, and a shut-down one would log for every span ended after.
            # The provider's owner shuts it down with the rest.
            telemetry.span_processor.force_flush(timeout_millis)
        else:
            telemetry.force_flush(timeout_millis)
        if telemetry.owns_meter_provider:
            meter: Any = telemetry.meter_provider
            meter.shutdown(timeout_millis=timeout_millis)
    except Exception:  # never let telemetry fail the engine's exit
        log.warning("telemetry shutdown did not complete", exc_info=False)
