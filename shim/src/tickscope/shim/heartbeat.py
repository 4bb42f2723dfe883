"""The engine's own heartbeat: is its main loop still turning?

A process can be up while its main loop is stuck (a deadlock, a call that never
returns, an await that never completes): `engine_process_up` stays 1 and nothing
restarts it. The loop tells the shim it went round once more::

    from tickscope import shim

    while True:
        shim.heartbeat("main")   # once per iteration
        ...

or times one iteration's body::

    @shim.loop("main")           # a function (sync or async) called once per iteration
    def step() -> None: ...

    with shim.loop("main"):      # or a block that is one iteration
        ...

Two instruments, scope `tickscope.shim`, OpenTelemetry API only:

- `engine.loop.heartbeat.timestamp` (observable gauge, unit s, {loop}): the Unix
  time of the loop's last beat, read at each metrics export
  (engine_loop_heartbeat_timestamp_seconds on the sidecar's /metrics, which serves
  /engine/healthz from it);
- `engine.loop.iteration.duration` (histogram, unit s, {loop})
  (engine_loop_iteration_duration_seconds): with `heartbeat()`, the time since the
  loop's previous heartbeat, a whole iteration with its waits; with `loop()`, the
  time inside the block or the call, the body only (it beats on entry and on exit).
  Use one of the two per loop name, not both.

Cost: a beat is a clock read and a dict write for the gauge, plus the SDK's
Histogram.record for the duration (~5.6 us per heartbeat() in all, ~6.2 us per
`with loop()`, on the 2-core development machine); beat once per iteration of a
loop, not once per message of a feed.

Loop names are code, not data: 1 to 64 of `A-Z a-z 0-9 _ . : -`, at most
`MAX_LOOPS` of them per process (a name past that is not recorded, with one
warning). A name outside that alphabet raises ValueError at its first use.
"""

from __future__ import annotations

import functools
import inspect
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, Histogram, MeterProvider, Observation

from tickscope.shim.version import __version__

__all__ = [
    "DURATION_BUCKETS",
    "HEARTBEAT_INSTRUMENT",
    "ITERATION_INSTRUMENT",
    "MAX_LOOPS",
    "Heartbeats",
    "LoopTimer",
    "heartbeat",
    "loop",
]

F = TypeVar("F", bound=Callable[..., Any])

_SCOPE = "tickscope.shim"
HEARTBEAT_INSTRUMENT = "engine.loop.heartbeat.timestamp"
ITERATION_INSTRUMENT = "engine.loop.iteration.duration"
# Seconds, from an event-driven loop's milliseconds to a rebalancer's minutes.
DURATION_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0,
)  # fmt: skip
MAX_LOOPS = 64
# The sidecar's engine.heartbeats[].loop accepts the same names (fullmatch: a `$`
# would let a trailing newline through).
_LOOP_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,64}")

log = logging.getLogger("tickscope.shim")


class Heartbeats:
    """The heartbeats of one process's loops, and their two instruments.

    `heartbeat()` and `loop()` use one instance made at import, on the global
    MeterProvider (a proxy until configure() or opentelemetry-instrument sets the
    SDK's). Tests and engines with a provider of their own make another one.
    `wall` is the Unix clock the gauge reports in; `monotonic` measures the
    iterations and orders the beats (a wall-clock step between two beats changes
    neither).
    """

    def __init__(
        self,
        meter_provider: MeterProvider | None = None,
        *,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        max_loops: int = MAX_LOOPS,
    ) -> None:
        self._meter_provider = meter_provider
        self._wall = wall
        self._monotonic = monotonic
        self._max_loops = max_loops
        # loop -> monotonic time of its last beat: the only thing a beat writes.
        self._last: dict[str, float] = {}
        self._attributes: dict[str, dict[str, str]] = {}
        self._lock = threading.Lock()
        self._histogram: Histogram | None = None
        self._warned = False

    # -- the hot path ------------------------------------------------------------------

    def beat(self, loop: str = "main") -> None:
        """The loop went round once more; records the time since its previous beat."""
        now = self._monotonic()
        previous = self._last.get(loop)
        if previous is None:
            if not self._admit(loop):
                return
        else:
            histogram = self._histogram
            assert histogram is not None  # made by _admit, before any loop is admitted
            histogram.record(now - previous, self._attributes[loop])
        self._last[loop] = now

    def mark(self, loop: str) -> float | None:
        """A beat that records no duration; its monotonic time, None when the loop
        is not recorded (past max_loops)."""
        now = self._monotonic()
        if loop not in self._last and not self._admit(loop):
            return None
        self._last[loop] = now
        return now

    def record(self, loop: str, seconds: float) -> None:
        histogram = self._histogram
        if histogram is not None and loop in self._attributes:
            histogram.record(seconds, self._attributes[loop])

    def loop(self, name: str = "main") -> LoopTimer:
        """A context manager and decorator timing one iteration of loop `name`."""
        check_loop_name(name)
        return LoopTimer(self, name)

    # -- first sight of a loop ---------------------------------------------------------------

    def _admit(self, loop: str) -> bool:
        check_loop_name(loop)
        with self._lock:
            if loop in self._attributes:
                return True
            if len(self._attributes) >= self._max_loops:
                if not self._warned:
                    self._warned = True
                    log.warning(
                        "more than %d heartbeat loop names: %r and later ones are not recorded",
                        self._max_loops,
                        loop,
                    )
                return False
            if self._histogram is None:
                self._histogram = self._instruments()
            self._attributes[loop] = {"loop": loop}
            return True

    def _instruments(self) -> Histogram:
        meter = metrics.get_meter(_SCOPE, __version__, meter_provider=self._meter_provider)
        meter.create_observable_gauge(
            HEARTBEAT_INSTRUMENT,
            [self._observe],
            unit="s",
            description="Unix time of the engine loop's last heartbeat.",
        )
        return meter.create_histogram(
            ITERATION_INSTRUMENT,
            unit="s",
            description="Duration of one iteration of the engine loop: between heartbeats "
            "(shim.heartbeat) or of the timed body (shim.loop).",
            explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
        )

    def _observe(self, _: CallbackOptions) -> Iterable[Observation]:
        last = self._last.copy()  # one C call: atomic against the beats of other threads
        offset = self._wall() - self._monotonic()
        return [Observation(at + offset, self._attributes[name]) for name, at in last.items()]


class LoopTimer:
    """One iteration of a loop: `with` it, or decorate the function called once per
    iteration (sync or async). Beats on entry and on exit, and records the time in
    between as the iteration's duration; an exception ends the iteration too and
    propagates unchanged. Decorate the function that runs *one* iteration, not the
    one that loops forever: that one would beat once and never again.
    """

    def __init__(self, heartbeats: Heartbeats, name: str) -> None:
        self._heartbeats = heartbeats
        self.name = name
        self._started: list[float | None] = []

    def _enter(self) -> float | None:
        return self._heartbeats.mark(self.name)

    def _exit(self, started: float | None) -> None:
        ended = self._heartbeats.mark(self.name)
        if started is not None and ended is not None:
            self._heartbeats.record(self.name, ended - started)

    def __enter__(self) -> LoopTimer:
        self._started.append(self._enter())
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit(self._started.pop())

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                started = self._enter()
                try:
                    return await fn(*args, **kwargs)
                finally:
                    self._exit(started)

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            started = self._enter()
            try:
                return fn(*args, **kwargs)
            finally:
                self._exit(started)

        return cast(F, run)


def check_loop_name(name: object) -> None:
    if not isinstance(name, str) or not _LOOP_NAME.fullmatch(name):
        raise ValueError(
            f"heartbeat loop name {name!r}: use 1 to 64 of A-Z a-z 0-9 _ . : - "
            "(a constant, such as 'main')"
        )


_default = Heartbeats()


def heartbeat(loop: str = "main") -> None:
    """Mark loop `loop` alive now: call it once per iteration of the engine's loop.

    Records engine.loop.heartbeat.timestamp{loop} (read at the next export) and the
    time since this loop's previous heartbeat in engine.loop.iteration.duration. The
    sidecar's /engine/healthz answers 503 once a configured loop's last beat is older
    than its max_age (engine.heartbeats), which the Helm chart makes the engine
    container's liveness probe.
    """
    _default.beat(loop)


def loop(name: str = "main") -> LoopTimer:
    """Time one iteration of loop `name`: `with shim.loop("main"): ...`, or
    `@shim.loop("main")` on the function (sync or async) called once per iteration.
    Beats on entry and exit, so the sidecar sees the loop alive as heartbeat() would,
    and records the body's duration in engine.loop.iteration.duration."""
    return _default.loop(name)
