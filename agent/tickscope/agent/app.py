"""Wiring: builds the parts from the config, starts them, stops them in order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import Counter

from tickscope.agent.config import Config
from tickscope.agent.selfmetrics import SelfMetrics
from tickscope.agent.server import AdminServer
from tickscope.agent.version import __version__
from tickscope.collectors.base import Source
from tickscope.collectors.engine import EngineProcessCollector
from tickscope.collectors.engine.finder import PidFileError, check_pid_file
from tickscope.collectors.host import HostCollector
from tickscope.collectors.runner import CollectorRunner
from tickscope.connectors.spanmetrics import SpanMetrics
from tickscope.connectors.spanstream import SpanStream
from tickscope.connectors.trading import TradingMetrics
from tickscope.core.consumer import TraceBatch
from tickscope.core.errors import StartupError
from tickscope.core.health import Health, LoopMonitor
from tickscope.exporters.forward import Forwarder
from tickscope.exporters.otlpmetrics import MetricStore
from tickscope.exporters.prometheus import new_registry
from tickscope.exposition.text import RenderedFamilies
from tickscope.pipeline import Pipeline
from tickscope.receivers.intake import Intake
from tickscope.receivers.metrics import ReceiverMetrics
from tickscope.receivers.metrics_intake import MetricsIntake
from tickscope.receivers.otlp_http import OTLPHTTPReceiver

if TYPE_CHECKING:
    from tickscope.receivers.otlp_grpc import OTLPGRPCReceiver

__all__ = ["Sidecar"]

log = logging.getLogger("tickscope")


class Sidecar:
    def __init__(self, config: Config, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.config = config
        self.registry = new_registry()
        self.health = Health()
        self.loop_monitor = LoopMonitor()
        self._started = time.monotonic()
        self._stop = asyncio.Event()

        sources: list[Source] = []
        if config.host.enabled:
            sources.append(HostCollector(config.host))
        if config.engine.processes:
            for proc in config.engine.processes:
                if proc.pid_file is not None:
                    try:
                        check_pid_file(proc.pid_file)
                    except PidFileError as exc:
                        raise StartupError(f"engine.processes ({proc.name}): {exc}") from None
            try:
                sources.append(EngineProcessCollector(config.engine, env))
            except ValueError as exc:
                raise StartupError(str(exc)) from None

        self.self_metrics = SelfMetrics(self.registry, [s.name for s in sources])
        self.runners = [
            CollectorRunner(s, self.self_metrics, self.health, config.limits.collect_timeout)
            for s in sources
        ]
        for runner in self.runners:
            self.registry.register(runner.snapshot)

        rendered: list[RenderedFamilies] = []
        self._build_span_path(rendered)
        self.server = AdminServer(
            config.server, self.registry, self.health, self.loop_monitor, self.status, rendered
        )
        self.health.require("admin_server", "not listening yet")

    def _build_span_path(self, rendered: list[RenderedFamilies]) -> None:
        """Receivers -> pipeline -> span metrics, trading metrics, forwarder."""
        config = self.config
        self.pipeline: Pipeline | None = None
        self.spanmetrics: SpanMetrics | None = None
        self.trading: TradingMetrics | None = None
        self.forwarder: Forwarder | None = None
        self.http_receiver: OTLPHTTPReceiver | None = None
        self.grpc_receiver: OTLPGRPCReceiver | None = None
        receivers = tuple(
            name
            for name, on in (
                ("otlp_http", config.receiver.http.enabled),
                ("otlp_grpc", config.receiver.grpc.enabled),
            )
            if on
        )
        if not receivers:
            return
        pipeline = self.pipeline = Pipeline(config.limits.queue_capacity_spans, self.registry)
        if config.spanmetrics.enabled:
            self.spanmetrics = SpanMetrics(config.spanmetrics, self.registry)
            rendered.append(self.spanmetrics)
        if config.trading.enabled:
            self.trading = TradingMetrics(config.trading, self.registry)
            rendered.append(self.trading)
        stream: SpanStream | None = None
        if self.spanmetrics is not None or self.trading is not None:
            stream = SpanStream(self.spanmetrics, self.trading)
            invalid = Counter(
                "tickscope_receiver_invalid_attributes_total",
                "Span attributes that did not decode as OTLP KeyValues (left out of the metrics).",
                registry=self.registry,
            )

            def aggregate(batch: TraceBatch) -> None:
                before = stream.attributes.invalid
                stream.consume_view(batch.view)
                if stream.attributes.invalid != before:
                    invalid.inc(stream.attributes.invalid - before)

            pipeline.add_consumer("span_metrics", aggregate)
        if config.forward.enabled:
            forwarder = self.forwarder = Forwarder(config.forward, self.registry)

            def forward(batch: TraceBatch) -> None:
                if stream is not None and not stream.last_batch_valid:
                    # The upstream would refuse it, and everything batched with it.
                    forwarder.drop(batch.spans, "invalid")
                    return
                forwarder.offer(batch.payload, batch.spans)

            pipeline.add_consumer("forward", forward)
        receiver_metrics = ReceiverMetrics(self.registry, receivers)
        intake = Intake(pipeline, receiver_metrics, keep_payload=config.forward.enabled)
        metrics_intake: MetricsIntake | None = None
        self.metric_store: MetricStore | None = None
        if config.metrics.enabled:
            self.metric_store = MetricStore(config.metrics, self.registry)
            rendered.append(self.metric_store)
            metrics_intake = MetricsIntake(self.metric_store, receiver_metrics)
        if config.receiver.http.enabled:
            self.http_receiver = OTLPHTTPReceiver(
                config.receiver.http,
                intake,
                self.health,
                shutdown_grace=config.server.shutdown_timeout * 0.1,
                metrics_intake=metrics_intake,
            )
        if config.receiver.grpc.enabled:
            # grpcio costs ~9 MiB of RSS: loaded only by sidecars that serve gRPC.
            from tickscope.receivers.otlp_grpc import OTLPGRPCReceiver

            self.grpc_receiver = OTLPGRPCReceiver(
                config.receiver.grpc, intake, self.health, metrics_intake=metrics_intake
            )

    async def start(self) -> None:
        self.loop_monitor.start()
        await self.server.start()
        self.health.set_ready("admin_server")
        if self.pipeline is not None:
            await self.pipeline.start()
        if self.forwarder is not None:
            await self.forwarder.start()
        if self.http_receiver is not None:
            await self.http_receiver.start()
        if self.grpc_receiver is not None:
            await self.grpc_receiver.start()
        for runner in self.runners:
            runner.start()
        log.info(
            "tickscope started",
            extra={
                "version": __version__,
                "collectors": [r.source.name for r in self.runners],
                "engine_processes": [p.name for p in self.config.engine.processes],
                "receivers": self.receiver_ports(),
            },
        )

    async def stop(self) -> None:
        """Stop taking spans, process what was taken, forward what can be, then go.

        The whole sequence runs under server.shutdown_timeout (see serve()); the
        shares below keep each step from eating the others' time.
        """
        budget = self.config.server.shutdown_timeout
        # Not ready first, so Kubernetes stops routing to the pod while we wind down.
        self.health.shutting_down()
        # Shares of the budget; the last 20% is left for the collectors and the admin server.
        if self.http_receiver is not None:
            await self.http_receiver.stop()
        if self.grpc_receiver is not None:
            await self.grpc_receiver.stop(grace=budget * 0.1)
        if self.pipeline is not None:
            await self.pipeline.stop(grace=budget * 0.2)
        if self.forwarder is not None:
            await self.forwarder.stop(grace=budget * 0.4)
        for runner in self.runners:
            await runner.stop()
        await self.server.stop()
        await self.loop_monitor.stop()
        log.info("tickscope stopped", extra={"uptime_seconds": round(self.uptime, 3)})

    def request_stop(self) -> None:
        self._stop.set()

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT, then shut down within server.shutdown_timeout."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig)
        try:
            await self.start()
            await self._stop.wait()
        finally:
            try:
                await asyncio.wait_for(self.stop(), self.config.server.shutdown_timeout)
            except TimeoutError:
                log.warning(
                    "shutdown did not finish in time; exiting anyway",
                    extra={"timeout_seconds": self.config.server.shutdown_timeout},
                )
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        log.info("signal received, shutting down", extra={"signal": sig.name})
        self._stop.set()

    def receiver_ports(self) -> dict[str, int | None]:
        """The ports the OTLP receivers listen on (bound, when port 0 was asked for)."""
        receivers = (("otlp_http", self.http_receiver), ("otlp_grpc", self.grpc_receiver))
        return {name: r.port for name, r in receivers if r is not None}

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started

    def status(self) -> dict[str, Any]:
        now = time.monotonic()
        collectors = []
        engine: list[dict[str, Any]] = []
        for runner in self.runners:
            snap = runner.snapshot.snapshot
            collectors.append(
                {
                    "name": runner.source.name,
                    "interval_seconds": runner.source.interval,
                    "last_duration_seconds": runner.last_duration,
                    "last_success_age_seconds": None
                    if snap is None
                    else round(now - snap.monotonic, 3),
                    "errors": runner.errors,
                }
            )
            engine.extend(runner.source.status().get("processes", []))
        status: dict[str, Any] = {
            "version": __version__,
            "uptime_seconds": round(self.uptime, 3),
            "ready": self.health.ready,
            "readiness": [
                {"name": c.name, "ready": c.ready, "reason": c.reason}
                for c in self.health.conditions
            ],
            "collectors": collectors,
            "engine_processes": engine,
        }
        if self.pipeline is not None:
            status["spans"] = {
                "per_second": round(self.pipeline.processed.rate(), 1),
                "processed": self.pipeline.processed.total,
                "queued": self.pipeline.queued_spans,
                "queue_capacity": self.pipeline.capacity,
                "receivers": self.receiver_ports(),
            }
            if self.spanmetrics is not None:
                status["spans"]["series"] = self.spanmetrics.series_count()
                status["spans"]["series_limit"] = self.config.spanmetrics.max_series
            if self.forwarder is not None:
                status["spans"]["forward"] = {
                    "endpoint": self.config.forward.redacted_endpoint(),
                    "sent": int(self.forwarder.sent._value.get()),
                }
        return status
