"""Runs a collector on its interval, off the event loop, with a timeout."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from tickscope.collectors.base import CollectResult, SnapshotCollector, Source
from tickscope.collectors.metrics import CollectorMetrics
from tickscope.collectors.worker import DaemonWorker
from tickscope.core.health import Health

__all__ = ["CollectorRunner"]

log = logging.getLogger("tickscope.collector")

# The same failure is logged at most this often; the counter still counts every one.
_LOG_REPEAT_SECONDS = 300.0


class CollectorRunner:
    def __init__(
        self,
        source: Source,
        metrics: CollectorMetrics,
        health: Health,
        timeout: float,
    ) -> None:
        self.source = source
        self.timeout = min(timeout, source.interval * 10)
        # Three missed intervals (or one timeout) and the data is too old to serve.
        self.snapshot = SnapshotCollector(max_age=source.interval * 3 + self.timeout)
        self.last_duration: float | None = None
        self.errors = 0
        self._metrics = metrics
        self._health = health
        self._worker = DaemonWorker(f"collector-{source.name}")
        self._task: asyncio.Task[None] | None = None
        self._last_logged: dict[str, float] = {}
        self._ready_name = f"collector:{source.name}"
        health.require(self._ready_name, "first collection not done yet")

    @property
    def name(self) -> str:
        return f"collector:{self.source.name}"

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(
            self._run(), name=f"collector-{self.source.name}"
        )

    async def stop(self, grace: float = 0.0) -> None:
        """Cancel at once (a collection in flight is abandoned: its worker is a
        daemon thread, and a stuck statvfs must not hold up shutdown)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._worker.stop()
        self.source.close()

    async def collect_once(self) -> bool:
        """Collect now; True if a snapshot was published."""
        name = self.source.name
        if self._worker.busy:
            # The previous collection is stuck (a hung mount, a frozen /proc read).
            # Queueing another behind it would only pile up.
            self._fail(f"previous collection still running after {self.timeout:g}s")
            return False
        started = time.perf_counter()
        future = asyncio.wrap_future(self._worker.submit(self._timed_collect))
        try:
            result, duration = await asyncio.wait_for(asyncio.shield(future), self.timeout)
        except TimeoutError:
            self._fail(f"collection timed out after {self.timeout:g}s")
            return False
        except Exception as exc:
            self._fail(f"collection failed: {type(exc).__name__}: {exc}")
            return False
        for error in result.errors:
            self._fail(error)
        self.snapshot.publish(result.families)
        self.last_duration = duration
        self._metrics.collect_duration.labels(name).set(duration)
        self._metrics.collect_last_success.labels(name).set(time.time())
        self._health.set_ready(self._ready_name)
        for condition, reason in self.source.readiness().items():
            if reason is None:
                self._health.set_ready(condition)
            else:
                self._health.set_not_ready(condition, reason)
        log.debug(
            "collection done",
            extra={
                "collector": name,
                "duration_seconds": round(duration, 6),
                "wall_seconds": round(time.perf_counter() - started, 6),
            },
        )
        return True

    def _timed_collect(self) -> tuple[CollectResult, float]:
        started = time.perf_counter()
        result = self.source.collect()
        return result, time.perf_counter() - started

    def _fail(self, message: str) -> None:
        self.errors += 1
        self._metrics.collect_errors.labels(self.source.name).inc()
        now = time.monotonic()
        last = self._last_logged.get(message)
        if last is None or now - last >= _LOG_REPEAT_SECONDS:
            self._last_logged[message] = now
            log.warning(message, extra={"collector": self.source.name})

    async def _run(self) -> None:
        interval = self.source.interval
        next_at = time.monotonic()
        while True:
            await self.collect_once()
            next_at += interval
            now = time.monotonic()
            if next_at < now:
                # Fell behind (slow collection, suspended process): skip the missed
                # ticks instead of bursting to catch up.
                next_at = now + interval - ((now - next_at) % interval)
            await asyncio.sleep(next_at - now)
