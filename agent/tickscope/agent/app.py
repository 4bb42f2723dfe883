"""The host: builds the components from the config, starts them in order, stops
them in reverse, and answers the status page from what they report."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter

from tickscope.agent.config import Config
from tickscope.agent.selfmetrics import register_build_info
from tickscope.agent.server import AdminServer
from tickscope.agent.status import (
    CollectorStatus,
    EngineProcessStatus,
    ForwardStatus,
    HeartbeatStatus,
    ReadinessCheck,
    SpanStatus,
    Status,
)
from tickscope.agent.version import __version__
from tickscope.collectors.base import Source
from tickscope.collectors.engine import EngineProcessCollector
from tickscope.collectors.engine.finder import PidFileError, check_pid_file
from tickscope.collectors.engine.heartbeat import HEARTBEAT_METRIC, EngineHeartbeats
from tickscope.collectors.host import HostCollector
from tickscope.collectors.metrics import CollectorMetrics
from tickscope.collectors.runner import CollectorRunner
from tickscope.connectors.spanmetrics import SpanMetrics
from tickscope.connectors.spanstream import SpanStream
from tickscope.connectors.trading import TradingMetrics
from tickscope.core.component import Component
from tickscope.core.consumer import TraceBatch
from tickscope.core.errors import StartupError
from tickscope.core.health import Health, LoopMonitor
from tickscope.exporters.forward import Forwarder
from tickscope.exporters.otlpmetrics import MetricStore
from tickscope.exporters.prometheus import new_registry
from tickscope.exposition.text import RenderedFamilies
from tickscope.pipeline import Consumer, Pipeline
from tickscope.receivers.intake import Intake
from tickscope.receivers.metrics import ReceiverMetrics
from tickscope.receivers.metrics_intake import MetricsIntake
from tickscope.receivers.otlp_http import OTLPHTTPReceiver

if TYPE_CHECKING:
    from tickscope.receivers.otlp_grpc import OTLPGRPCReceiver

__all__ = ["Sidecar"]

log = logging.getLogger("tickscope")

# Shares of server.shutdown_timeout each component may spend stopping; the rest
# (20%) is left for the collectors and the admin server, which stop at once.
_GRPC_GRACE = 0.1
_PIPELINE_GRACE = 0.2
_FORWARD_GRACE = 0.4
# The HTTP receiver's grace for requests in flight (aiohttp takes it at start).
_HTTP_GRACE = 0.1


@dataclass
class SpanPath:
    """The components between the OTLP receivers and /metrics (or upstream)."""

    pipeline: Pipeline
    receivers: list[OTLPHTTPReceiver | OTLPGRPCReceiver] = field(default_factory=list)
    spanmetrics: SpanMetrics | None = None
    trading: TradingMetrics | None = None
    forwarder: Forwarder | None = None
    metric_store: MetricStore | None = None


def _engine_sources(config: Config, env: Mapping[str, str]) -> list[Source]:
    if not config.engine.processes:
        return []
    for proc in config.engine.processes:
        if proc.pid_file is not None:
            try:
                check_pid_file(proc.pid_file)
            except PidFileError as exc:
                raise StartupError(f"engine.processes ({proc.name}): {exc}") from None
    try:
        return [EngineProcessCollector(config.engine, env)]
    except ValueError as exc:
        raise StartupError(str(exc)) from None


def _span_path(
    config: Config, registry: CollectorRegistry, health: Health
) -> tuple[SpanPath | None, list[RenderedFamilies]]:
    """Receivers -> pipeline -> span metrics, trading metrics, forwarder; and the
    metric store the receivers' /v1/metrics feeds. None without a receiver."""
    receivers = tuple(
        name
        for name, on in (
            ("otlp_http", config.receiver.http.enabled),
            ("otlp_grpc", config.receiver.grpc.enabled),
        )
        if on
    )
    if not receivers:
        return None, []
    rendered: list[RenderedFamilies] = []
    path = SpanPath(Pipeline(config.limits.queue_capacity_spans, registry))
    if config.spanmetrics.enabled:
        path.spanmetrics = SpanMetrics(config.spanmetrics, registry)
        rendered.append(path.spanmetrics)
    if config.trading.enabled:
        path.trading = TradingMetrics(config.trading, registry)
        rendered.append(path.trading)
    stream: SpanStream | None = None
    if path.spanmetrics is not None or path.trading is not None:
        stream = SpanStream(path.spanmetrics, path.trading)
        path.pipeline.add_consumer("span_metrics", _aggregator(stream, registry))
    if config.forward.enabled:
        forwarder = path.forwarder = Forwarder(config.forward, registry)

        def forward(batch: TraceBatch) -> None:
            if stream is not None and not stream.last_batch_valid:
                # The upstream would refuse it, and everything batched with it.
                forwarder.drop(batch.spans, "invalid")
                return
            forwarder.offer(batch.payload, batch.spans)

        path.pipeline.add_consumer("forward", forward)
    receiver_metrics = ReceiverMetrics(registry, receivers)
    intake = Intake(path.pipeline, receiver_metrics, keep_payload=config.forward.enabled)
    metrics_intake: MetricsIntake | None = None
    if config.metrics.enabled:
        path.metric_store = MetricStore(config.metrics, registry)
        rendered.append(path.metric_store)
        metrics_intake = MetricsIntake(path.metric_store, receiver_metrics)
    if config.receiver.http.enabled:
        path.receivers.append(
            OTLPHTTPReceiver(
                config.receiver.http,
                intake,
                health,
                shutdown_grace=config.server.shutdown_timeout * _HTTP_GRACE,
                metrics_intake=metrics_intake,
            )
        )
    if config.receiver.grpc.enabled:
        # h2 (~1.4 MiB of RSS) is loaded only by sidecars that serve gRPC.
        from tickscope.receivers.otlp_grpc import OTLPGRPCReceiver

        path.receivers.append(
            OTLPGRPCReceiver(config.receiver.grpc, intake, health, metrics_intake=metrics_intake)
        )
    return path, rendered


def _engine_heartbeats(config: Config, spans: SpanPath | None) -> EngineHeartbeats | None:
    """/engine/healthz's judge of engine.heartbeats, reading the heartbeat gauge from
    the metric store; None when no loop is configured."""
    if not config.engine.heartbeats:
        return None
    store = None if spans is None else spans.metric_store
    if store is None:  # Config refuses this; kept for configs built in code
        raise StartupError(
            "engine.heartbeats needs OTLP metrics: metrics.enabled and a receiver enabled"
        )
    return EngineHeartbeats(config.engine.heartbeats, lambda: store.gauge_values(HEARTBEAT_METRIC))


def _aggregator(stream: SpanStream, registry: CollectorRegistry) -> Consumer:
    invalid = Counter(
        "tickscope_receiver_invalid_attributes_total",
        "Span attributes that did not decode as OTLP KeyValues (left out of the metrics).",
        registry=registry,
    )

    def aggregate(batch: TraceBatch) -> None:
        before = stream.attributes.invalid
        stream.consume_view(batch.view)
        if stream.attributes.invalid != before:
            invalid.inc(stream.attributes.invalid - before)

    return aggregate


class Sidecar:
    def __init__(self, config: Config, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.config = config
        self.registry = new_registry()
        register_build_info(self.registry)
        self.health = Health()
        self.loop_monitor = LoopMonitor()
        self._started = time.monotonic()
        self._stop = asyncio.Event()

        sources: list[Source] = [HostCollector(config.host)] if config.host.enabled else []
        sources += _engine_sources(config, env)
        collector_metrics = CollectorMetrics(self.registry, [s.name for s in sources])
        self.runners = [
            CollectorRunner(s, collector_metrics, self.health, config.limits.collect_timeout)
            for s in sources
        ]
        for runner in self.runners:
            self.registry.register(runner.snapshot)

        self.spans, rendered = _span_path(config, self.registry, self.health)
        self.engine_heartbeats = _engine_heartbeats(config, self.spans)
        self.server = AdminServer(
            config.server,
            self.registry,
            self.health,
            self.loop_monitor,
            self.status,
            rendered,
            engine_heartbeats=self.engine_heartbeats,
        )
        # Start order, each with its share of the shutdown budget. Downstream
        # before upstream: nothing is offered to a stage that is not running.
        # Stopped in reverse: receivers first, so what they accepted is processed
        # and forwarded; the admin server last, so probes answer to the end.
        budget = config.server.shutdown_timeout
        self.components: list[tuple[Component, float]] = [
            (self.loop_monitor, 0.0),
            (self.server, 0.0),
        ]
        if self.spans is not None:
            if self.spans.forwarder is not None:
                self.components.append((self.spans.forwarder, budget * _FORWARD_GRACE))
            self.components.append((self.spans.pipeline, budget * _PIPELINE_GRACE))
            self.components += [(r, budget * _GRPC_GRACE) for r in self.spans.receivers]
        self.components += [(r, 0.0) for r in self.runners]

    @property
    def pipeline(self) -> Pipeline | None:
        return None if self.spans is None else self.spans.pipeline

    async def start(self) -> None:
        for component, _ in self.components:
            await component.start()
        log.info(
            "tickscope started",
            extra={
                "version": __version__,
                "collectors": [r.source.name for r in self.runners],
                "engine_processes": [p.name for p in self.config.engine.processes],
                "engine_heartbeats": [h.loop for h in self.config.engine.heartbeats],
                "receivers": self.receiver_ports(),
            },
        )

    async def stop(self) -> None:
        """Stop taking spans, process what was taken, forward what can be, then go.

        The whole sequence runs under server.shutdown_timeout (see serve()); each
        component's share keeps it from eating the others' time.
        """
        # Not ready first, so Kubernetes stops routing to the pod while we wind down.
        self.health.shutting_down()
        for component, grace in reversed(self.components):
            try:
                await component.stop(grace)
            except Exception:
                # One component failing to stop must not keep the others from flushing.
                log.exception("stopping a component failed", extra={"component": component.name})
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
        if self.spans is None:
            return {}
        return {r.name.removeprefix("receiver:"): r.port for r in self.spans.receivers}

    @property
    def uptime(self) -> float:
        return time.monotonic() - self._started

    def status(self) -> Status:
        now = time.monotonic()
        collectors: list[CollectorStatus] = []
        engine: list[EngineProcessStatus] = []
        for runner in self.runners:
            snap = runner.snapshot.snapshot
            collectors.append(
                CollectorStatus(
                    name=runner.source.name,
                    interval_seconds=runner.source.interval,
                    last_duration_seconds=runner.last_duration,
                    last_success_age_seconds=None
                    if snap is None
                    else round(now - snap.monotonic, 3),
                    errors=runner.errors,
                )
            )
            engine += [
                EngineProcessStatus(**p) for p in runner.source.status().get("processes", [])
            ]
        return Status(
            version=__version__,
            uptime_seconds=round(self.uptime, 3),
            ready=self.health.ready,
            readiness=[ReadinessCheck(c.name, c.ready, c.reason) for c in self.health.conditions],
            collectors=collectors,
            engine_processes=engine,
            spans=self._span_status(),
            heartbeats=self._heartbeat_status(),
        )

    def _heartbeat_status(self) -> list[HeartbeatStatus]:
        if self.engine_heartbeats is None:
            return []
        return [
            HeartbeatStatus(
                loop=h.loop,
                status=h.status,
                age_seconds=None if h.age is None else round(h.age, 3),
                max_age_seconds=h.max_age,
                reason=h.reason or None,
            )
            for h in self.engine_heartbeats.check().loops
        ]

    def _span_status(self) -> SpanStatus | None:
        spans = self.spans
        if spans is None:
            return None
        pipeline = spans.pipeline
        forward = None
        if spans.forwarder is not None:
            forward = ForwardStatus(
                endpoint=self.config.forward.redacted_endpoint(),
                sent=int(spans.forwarder.sent._value.get()),
            )
        return SpanStatus(
            per_second=round(pipeline.processed.rate(), 1),
            processed=pipeline.processed.total,
            queued=pipeline.queued_spans,
            queue_capacity=pipeline.capacity,
            receivers=self.receiver_ports(),
            series=None if spans.spanmetrics is None else spans.spanmetrics.series_count(),
            series_limit=None if spans.spanmetrics is None else self.config.spanmetrics.max_series,
            forward=forward,
        )
