"""The admin HTTP server: GET /metrics, /healthz, /readyz and / (status)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from pydantic import Field

from tickscope.agent.status import Status
from tickscope.core.configtypes import Duration, ListenHost, Port, StrictModel
from tickscope.core.errors import ListenError
from tickscope.core.health import Health, LoopMonitor
from tickscope.exporters.prometheus import render
from tickscope.exposition.text import RenderedFamilies

__all__ = ["AdminServer", "ServerConfig"]

log = logging.getLogger("tickscope.server")


class ServerConfig(StrictModel):
    bind: ListenHost = Field("0.0.0.0", description="Address the admin server listens on.")
    port: Port = Field(9464, description="Admin port: /metrics, /healthz, /readyz, /.")
    shutdown_timeout: Duration = Field(
        10.0,
        description="Time allowed for in-flight requests and flushing after SIGTERM; keep it "
        "under the pod's terminationGracePeriodSeconds (30s by default).",
    )
    liveness_max_loop_lag: Duration = Field(
        5.0, description="/healthz fails once the event loop has been blocked this long."
    )


StatusFn = Callable[[], Status]


class AdminServer:
    name = "admin_server"

    def __init__(
        self,
        config: ServerConfig,
        registry: CollectorRegistry,
        health: Health,
        loop_monitor: LoopMonitor,
        status: StatusFn,
        rendered: Sequence[RenderedFamilies] = (),
    ) -> None:
        self._config = config
        self._registry = registry
        self._health = health
        self._loop = loop_monitor
        self._status = status
        self._rendered = tuple(rendered)
        self._runner: web.AppRunner | None = None
        self.port: int | None = None
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/", self._index)
        self._app = app
        health.require("admin_server", "not listening yet")

    async def start(self) -> None:
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=self._config.shutdown_timeout,
        )
        await runner.setup()
        site = web.TCPSite(runner, self._config.bind, self._config.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ListenError(
                "the admin server", "server.port", self._config.bind, self._config.port, exc
            ) from None
        self._runner = runner
        # With port 0 the OS picked one; report the one actually bound.
        self.port = int(runner.addresses[0][1]) if runner.addresses else self._config.port
        log.info(
            "admin server listening",
            extra={
                "address": self._config.bind,
                "port": self.port,
                "endpoints": "/metrics /healthz /readyz /",
            },
        )
        self._health.set_ready("admin_server")

    async def stop(self, grace: float = 0.0) -> None:
        """Last to stop: /healthz and /readyz answer until the very end."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        exposition = render(
            self._registry,
            accept=request.headers.get("Accept", ""),
            accept_encoding=request.headers.get("Accept-Encoding", ""),
            names=request.query.getall("name[]", []),
            rendered=self._rendered,
        )
        headers = {"Content-Type": exposition.content_type}
        if exposition.content_encoding:
            headers["Content-Encoding"] = exposition.content_encoding
        return web.Response(body=exposition.body, headers=headers)

    async def _healthz(self, request: web.Request) -> web.Response:
        lag = self._loop.lag
        limit = self._config.liveness_max_loop_lag
        body: dict[str, Any] = {"status": "ok", "loop_lag_seconds": round(lag, 4)}
        if lag > limit:
            body["status"] = "unhealthy"
            body["reason"] = f"event loop blocked for {lag:.1f}s (limit {limit:g}s)"
            return web.json_response(body, status=503)
        return web.json_response(body)

    async def _readyz(self, request: web.Request) -> web.Response:
        conditions = self._health.conditions
        ready = self._health.ready
        body = {
            "status": "ready" if ready else "not ready",
            "checks": [
                {"name": c.name, "ready": c.ready, **({"reason": c.reason} if c.reason else {})}
                for c in conditions
            ],
        }
        return web.json_response(body, status=200 if ready else 503)

    async def _index(self, request: web.Request) -> web.Response:
        status = self._status()
        wants_json = request.query.get(
            "format"
        ) == "json" or "application/json" in request.headers.get("Accept", "")
        if wants_json:
            return web.json_response(status.to_json(), dumps=lambda o: json.dumps(o, indent=2))
        return web.Response(text=status.to_text(), content_type="text/plain")
