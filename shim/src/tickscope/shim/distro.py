"""The tickscope distro and configurator: `opentelemetry-instrument` aimed at the sidecar.

With tickscope-shim installed, ``opentelemetry-instrument python bot.py`` runs,
before the bot's first line (opentelemetry-instrumentation's sitecustomize):

1. the distro (entry point group `opentelemetry_distro`, name `tickscope`):
   TickscopeDistro._configure sets OTEL_* defaults with os.environ.setdefault,
   so whatever the operator set wins (settings.otel_env_defaults): traces and
   metrics over OTLP/HTTP protobuf to the sidecar at http://127.0.0.1:4318 (:4317
   when OTEL_EXPORTER_OTLP_PROTOCOL=grpc), no logs exporter (the sidecar has no
   logs receiver), configure()'s batch and metric-interval settings, and the SDK's
   self-metrics (dropped spans are counted);
2. the configurator (group `opentelemetry_configurator`, name `tickscope`):
   TickscopeConfigurator, the SDK's own configurator with the shim's additions, as
   vendor distros do it: the shim's resource attributes (k8s.* from the downward
   API, host, process, telemetry.distro.name/version, service.name
   "trading-engine" unless OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES name it),
   the export gate in front of the span exporter (a down sidecar costs the engine
   almost nothing), the shim's runtime metrics (TICKSCOPE_SHIM_RUNTIME_METRICS=false
   turns them off), and the rate limit on OpenTelemetry's own warnings;
3. every `opentelemetry_instrumentor` entry point, ours (`ccxt`) among them.

Which distro and configurator run when several are installed: the
auto-instrumentation (opentelemetry.instrumentation.auto_instrumentation._load)
loads the distro named by OTEL_PYTHON_DISTRO, else the first `opentelemetry_distro`
entry point it finds; and the configurator named by OTEL_PYTHON_CONFIGURATOR,
else the first `opentelemetry_configurator` entry point, the others being
skipped with a warning. "First" is importlib.metadata's order, which depends on
where the distributions are installed: with another distro installed too (e.g.
opentelemetry-distro), set OTEL_PYTHON_DISTRO=tickscope and
OTEL_PYTHON_CONFIGURATOR=tickscope.
"""

from __future__ import annotations

import inspect
import logging
import os
from typing import Any

from opentelemetry import metrics, trace

# The module starts with a bare `# type: ignore`, so mypy sees none of its names.
from opentelemetry.instrumentation.distro import BaseDistro  # type: ignore[attr-defined]
from opentelemetry.sdk._configuration import _initialize_components, _OTelSDKConfigurator
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import SpanExporter

from tickscope.shim import export, logfilter, settings, setup
from tickscope.shim.resource import default_attributes

__all__ = ["TickscopeConfigurator", "TickscopeDistro"]

log = logging.getLogger("tickscope.shim")

# export_span_processor= (the processor in front of each exporter) is newer than the
# oldest SDK the shim supports (1.27); without it the spans are not gated.
_CAN_GATE = "export_span_processor" in inspect.signature(_initialize_components).parameters


class TickscopeDistro(BaseDistro):  # type: ignore[misc]  # BaseDistro is untyped
    """OTEL_* defaults for the sidecar on 127.0.0.1 (module doc)."""

    def _configure(self, **kwargs: Any) -> None:
        for name, value in settings.otel_env_defaults(os.environ).items():
            os.environ.setdefault(name, value)


class TickscopeConfigurator(_OTelSDKConfigurator):
    """The SDK's configurator, with the shim's resource, export gate and runtime metrics."""

    def _configure(self, **kwargs: Any) -> None:
        logfilter.install()
        kwargs.setdefault("resource_attributes", default_attributes())
        export_gate: export.ExportGate | None = None
        if _CAN_GATE:
            export_gate = export.ExportGate()
            gate_for_processor = export_gate

            def gated_processor(exporter: SpanExporter, *_: Any, **__: Any) -> SpanProcessor:
                # meter_provider=None: the global one, a proxy until the SDK's
                # MeterProvider is set a moment later, then that one.
                return export.batch_processor(
                    exporter, export_gate=gate_for_processor, meter_provider=None
                )

            kwargs.setdefault("export_span_processor", gated_processor)
        super()._configure(**kwargs)  # type: ignore[no-untyped-call]
        tracer_provider = trace.get_tracer_provider()
        meter_provider = metrics.get_meter_provider()
        if export_gate is not None:
            export.install_gate(export_gate, meter_provider)
        resource = (
            tracer_provider.resource if isinstance(tracer_provider, SDKTracerProvider) else None
        )
        setup.adopt_auto(
            setup.Telemetry(
                tracer_provider,
                meter_provider,
                resource,
                None,
                mode=setup.AUTO,
                export_gate=export_gate,
            )
        )
        if settings.env_flag(settings.RUNTIME_METRICS_ENV, True):
            from tickscope.shim.runtime import record_runtime_metrics

            record_runtime_metrics(meter_provider)
