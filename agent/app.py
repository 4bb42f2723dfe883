"""Wiring: builds the parts from the config, starts them, stops them in order."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
from collections.abc import Mapping
from typing import Any

from agent.collectors.base import Source
from agent.collectors.engine import EngineProcessCollector
from agent.collectors.engine.finder import PidFileError, check_pid_file
from agent.collectors.host import HostCollector
from agent.collectors.runner import CollectorRunner
from agent.config import Config
from agent.errors import StartupError
from agent.health import Health, LoopMonitor
from agent.selfmetrics import SelfMetrics
from agent.server import AdminServer
from agent.version import __version__
from exporters.prometheus import new_registry

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
        self.server = AdminServer(
            config.server, self.registry, self.health, self.loop_monitor, self.status
        )
        self.health.require("admin_server", "not listening yet")

    async def start(self) -> None:
        self.loop_monitor.start()
        await self.server.start()
        self.health.set_ready("admin_server")
        for runner in self.runners:
            runner.start()
        log.info(
            "tickscope started",
            extra={
                "version": __version__,
                "collectors": [r.source.name for r in self.runners],
                "engine_processes": [p.name for p in self.config.engine.processes],
            },
        )

    async def stop(self) -> None:
        # Not ready first, so Kubernetes stops routing scrapes here while we wind down.
        self.health.shutting_down()
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
        return {
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
