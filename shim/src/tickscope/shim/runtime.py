"""The engine's Python runtime figures, through the OpenTelemetry metrics API.

Seed users chased memory leaks and GC pauses; these are the figures for it,
named by the OpenTelemetry semantic conventions where they define one
(cpython.gc.*, process.*) and in the same style where they do not:

- cpython.gc.collections, cpython.gc.collected_objects,
  cpython.gc.uncollectable_objects (counters, by cpython.gc.generation);
- cpython.gc.pause_time (counter, seconds, by generation): time spent in
  collections, measured with gc.callbacks;
- cpython.gc.tracked_objects (gauge): objects the GC tracks, counted at most
  once a minute because counting walks them all;
- process.thread.count, process.memory.usage (RSS, bytes, from /proc on Linux),
  process.cpu.time (seconds, by cpu.mode) as the engine's own process sees them.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterable

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from tickscope.shim.version import __version__

__all__ = ["record_runtime_metrics"]

_TRACKED_EVERY = 60.0


class _GCPauses:
    """Accumulates time spent in each generation's collections."""

    def __init__(self) -> None:
        self.seconds = [0.0, 0.0, 0.0]
        self._started: float | None = None

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        elif self._started is not None:
            generation = info.get("generation", 0)
            if 0 <= generation < 3:
                self.seconds[generation] += time.perf_counter() - self._started
            self._started = None


_installed = False
_lock = threading.Lock()


def record_runtime_metrics(meter_provider: MeterProvider) -> None:
    """Register the observable instruments once per process."""
    global _installed
    with _lock:
        if _installed:
            return
        _installed = True
    meter = meter_provider.get_meter("tickscope.shim.runtime", __version__)
    pauses = _GCPauses()
    gc.callbacks.append(pauses)

    def stat(key: str) -> Iterable[Observation]:
        return [
            Observation(s[key], {"cpython.gc.generation": g}) for g, s in enumerate(gc.get_stats())
        ]

    def collections(_: CallbackOptions) -> Iterable[Observation]:
        return stat("collections")

    def collected(_: CallbackOptions) -> Iterable[Observation]:
        return stat("collected")

    def uncollectable(_: CallbackOptions) -> Iterable[Observation]:
        return stat("uncollectable")

    def pause_time(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(s, {"cpython.gc.generation": g}) for g, s in enumerate(pauses.seconds)]

    tracked = {"at": 0.0, "value": 0}

    def tracked_objects(_: CallbackOptions) -> Iterable[Observation]:
        now = time.monotonic()
        if now - tracked["at"] >= _TRACKED_EVERY:
            tracked["value"] = len(gc.get_objects())
            tracked["at"] = now
        return [Observation(tracked["value"])]

    def threads(_: CallbackOptions) -> Iterable[Observation]:
        return [Observation(threading.active_count())]

    def memory(_: CallbackOptions) -> Iterable[Observation]:
        rss = _resident_bytes()
        return [Observation(rss)] if rss is not None else []

    def cpu_time(_: CallbackOptions) -> Iterable[Observation]:
        times = os.times()
        return [
            Observation(times.user, {"cpu.mode": "user"}),
            Observation(times.system, {"cpu.mode": "system"}),
        ]

    meter.create_observable_counter(
        "cpython.gc.collections",
        [collections],
        unit="{collection}",
        description="Collections run, by generation.",
    )
    meter.create_observable_counter(
        "cpython.gc.collected_objects",
        [collected],
        unit="{object}",
        description="Objects the collector freed, by generation.",
    )
    meter.create_observable_counter(
        "cpython.gc.uncollectable_objects",
        [uncollectable],
        unit="{object}",
        description="Objects found uncollectable, by generation.",
    )
    meter.create_observable_counter(
        "cpython.gc.pause_time",
        [pause_time],
        unit="s",
        description="Time spent in collections, by generation.",
    )
    meter.create_observable_gauge(
        "cpython.gc.tracked_objects",
        [tracked_objects],
        unit="{object}",
        description="Objects tracked by the garbage collector.",
    )
    meter.create_observable_up_down_counter(
        "process.thread.count",
        [threads],
        unit="{thread}",
        description="Threads in the engine's process.",
    )
    meter.create_observable_up_down_counter(
        "process.memory.usage",
        [memory],
        unit="By",
        description="Resident memory of the engine's process.",
    )
    meter.create_observable_counter(
        "process.cpu.time",
        [cpu_time],
        unit="s",
        description="CPU time of the engine's process, by mode.",
    )


_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int | None:
    """The process's resident set, from /proc/self/statm (Linux, where engines run
    in pods): read directly, because the engine's distribution brings no psutil."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE_SIZE
    except (OSError, ValueError, IndexError):
        return None
