"""Liveness and readiness state that the parts of the sidecar report into.

Liveness asks one question: is the event loop still turning? A heartbeat task
notes when it last ran; a loop that has been blocked for longer than the
configured limit is reported dead, so the kubelet restarts the container.

Readiness is a set of named conditions (the admin server bound, each collector's
first collection done, each required engine process found, ...). The pod is
ready when all of them are; the reasons for the others are reported verbatim.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

__all__ = ["Condition", "Health", "LoopMonitor"]


@dataclass(frozen=True, slots=True)
class Condition:
    name: str
    ready: bool
    reason: str = ""


class Health:
    def __init__(self) -> None:
        self._conditions: dict[str, Condition] = {}
        self._shutting_down = False

    def require(self, name: str, reason: str) -> None:
        """Register a condition that starts out not ready, for `reason`."""
        self._conditions[name] = Condition(name, False, reason)

    def set_ready(self, name: str) -> None:
        self._conditions[name] = Condition(name, True)

    def set_not_ready(self, name: str, reason: str) -> None:
        self._conditions[name] = Condition(name, False, reason)

    def forget(self, name: str) -> None:
        self._conditions.pop(name, None)

    def shutting_down(self) -> None:
        self._shutting_down = True

    @property
    def conditions(self) -> list[Condition]:
        conditions = sorted(self._conditions.values(), key=lambda c: c.name)
        if self._shutting_down:
            conditions.insert(0, Condition("shutdown", False, "shutting down"))
        return conditions

    @property
    def ready(self) -> bool:
        return not self._shutting_down and all(c.ready for c in self._conditions.values())


class LoopMonitor:
    """Measures how late the event loop runs a task scheduled every `period` seconds."""

    def __init__(self, period: float = 0.25) -> None:
        self.period = period
        self._last_beat = time.monotonic()
        self._last_lag = 0.0
        self._task: asyncio.Task[None] | None = None

    name = "loop_monitor"

    async def start(self) -> None:
        self._last_beat = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._beat(), name="loop-monitor")

    async def stop(self, grace: float = 0.0) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    @property
    def lag(self) -> float:
        """Seconds the loop has been late: the last measured lag, or, when the
        heartbeat itself is overdue (the loop was blocked and a request got in
        first), how overdue it is."""
        overdue = time.monotonic() - self._last_beat - self.period
        return max(self._last_lag, overdue, 0.0)

    async def _beat(self) -> None:
        while True:
            before = time.monotonic()
            await asyncio.sleep(self.period)
            now = time.monotonic()
            self._last_lag = max(0.0, now - before - self.period)
            self._last_beat = now
