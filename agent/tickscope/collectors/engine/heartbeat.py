"""The engine's liveness from its loops' heartbeats: what GET /engine/healthz says.

The engine calls `shim.heartbeat("main")` once per iteration (or times iterations
with `shim.loop("main")`); the shim exports the Unix time of each loop's last beat
as the OTLP gauge engine.loop.heartbeat.timestamp, which the metric store serves as
engine_loop_heartbeat_timestamp_seconds{loop}. For every loop of
`engine.heartbeats`, /engine/healthz compares the newest value of that gauge (over
all its series: a restarted engine's beats replace its predecessor's) with the
sidecar's own clock:

- ok: the last beat is at most `max_age` old;
- waiting: no beat yet, and the sidecar started less than `grace` ago (the engine
  is still starting, or the sidecar was restarted and the next export is due);
- stale: the last beat is older than `max_age` (the loop is stuck, or the engine
  stopped exporting: a process that holds the GIL forever stops both);
- missing: no beat `grace` after the sidecar started.

Any stale or missing loop makes it 503 with those loops named. No configured loop:
200 with a note. The sidecar and the engine share a clock (one pod, one host), so
the age is the sidecar's Unix time minus the beat's.

An engine restart: the store keeps the old process's last beat (for
metrics.stale_after) until the new process's first export replaces it, so
/engine/healthz says stale in between. Whoever restarts the engine on a 503 waits
for the new process first: the kubelet does, for `initialDelaySeconds` after every
start of the container (the Helm chart's engine.heartbeatProbe). The sidecar's
`grace` covers only what it cannot know: the time before it has seen a beat at all.

This module reads no store itself: the host hands it a function that yields the
gauge's series as (labels, value), so components stay independent of each other.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field

from tickscope.core.configtypes import MAX_DURATION_SECONDS, Duration, StrictModel, parse_duration

__all__ = [
    "HEARTBEAT_METRIC",
    "EngineHeartbeats",
    "HeartbeatConfig",
    "HeartbeatReport",
    "LoopHealth",
]

# The shim's engine.loop.heartbeat.timestamp (unit s), as the metric store names it.
HEARTBEAT_METRIC = "engine_loop_heartbeat_timestamp_seconds"
LOOP_LABEL = "loop"
# The shim accepts the same names (tickscope.shim.heartbeat).
LOOP_NAME = r"^[A-Za-z0-9_.:\-]{1,64}$"

# A grace of 0 is meaningful (a loop must have beaten by the first probe).
_Grace = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(ge=0, le=MAX_DURATION_SECONDS, allow_inf_nan=False),
]


class HeartbeatConfig(StrictModel):
    """One loop /engine/healthz requires heartbeats from."""

    loop: str = Field(
        pattern=LOOP_NAME,
        description="The loop's name, as the engine passes it to shim.heartbeat() or "
        "shim.loop() (the `loop` label of engine_loop_heartbeat_timestamp_seconds).",
    )
    max_age: Duration = Field(
        30.0,
        description="/engine/healthz answers 503 once the loop's last heartbeat is older than "
        "this. It must cover the loop's longest normal iteration plus the shim's export "
        "interval (10s: a beat reaches the sidecar up to one interval late); 30s leaves one "
        "failed export on top for a loop that beats every second or more often.",
    )
    grace: _Grace = Field(
        60.0,
        description="How long after the sidecar starts a loop with no heartbeat at all counts "
        "as healthy (waiting): the engine's startup to its first exported beat. An engine "
        "restart is not covered (the old process's last beat is judged until the new one's "
        "arrives): the restarter waits, as the kubelet does for the probe's "
        "initialDelaySeconds.",
    )


LoopStatus = Literal["ok", "waiting", "stale", "missing"]


@dataclass(frozen=True, slots=True)
class LoopHealth:
    loop: str
    status: LoopStatus
    max_age: float
    age: float | None  # seconds since the last beat; None before the first
    reason: str = ""

    @property
    def healthy(self) -> bool:
        return self.status in ("ok", "waiting")

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "loop": self.loop,
            "status": self.status,
            "age_seconds": None if self.age is None else round(self.age, 3),
            "max_age_seconds": self.max_age,
        }
        if self.reason:
            body["reason"] = self.reason
        return body


@dataclass(frozen=True, slots=True)
class HeartbeatReport:
    loops: tuple[LoopHealth, ...]

    @property
    def healthy(self) -> bool:
        return all(h.healthy for h in self.loops)

    @property
    def stale(self) -> list[str]:
        return [h.loop for h in self.loops if not h.healthy]

    def to_json(self) -> dict[str, Any]:
        """/engine/healthz's body, shaped like /healthz's: status, and a reason when
        unhealthy."""
        if not self.loops:
            return {
                "status": "ok",
                "note": "no engine heartbeats configured (engine.heartbeats): the engine's "
                "loops are not checked",
                "loops": [],
            }
        body: dict[str, Any] = {"status": "ok" if self.healthy else "unhealthy"}
        if not self.healthy:
            body["reason"] = "stale engine heartbeats: " + "; ".join(
                f"{h.loop} ({h.reason})" for h in self.loops if not h.healthy
            )
            body["stale"] = self.stale
        body["loops"] = [h.to_json() for h in self.loops]
        return body


# (labels, value) of each series of the heartbeat gauge.
Series = Iterable[tuple[Mapping[str, str], float]]


class EngineHeartbeats:
    """Judges the configured loops' heartbeats from what `read()` yields.

    `wall` is the Unix clock the beats are compared with; `monotonic` measures the
    grace from the moment this object is made (the sidecar's start).
    """

    def __init__(
        self,
        heartbeats: Iterable[HeartbeatConfig],
        read: Callable[[], Series],
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.heartbeats = tuple(heartbeats)
        self._read = read
        self._wall = wall
        self._monotonic = monotonic
        self._started = monotonic()
        self._seen: set[str] = set()

    def newest_beats(self) -> dict[str, float]:
        """loop -> the newest beat over all its series (finite values only)."""
        newest: dict[str, float] = {}
        for labels, value in self._read():
            loop = labels.get(LOOP_LABEL)
            if loop is None or not math.isfinite(value):
                continue
            if value > newest.get(loop, -math.inf):
                newest[loop] = value
        return newest

    def check(self) -> HeartbeatReport:
        if not self.heartbeats:
            return HeartbeatReport(())
        beats = self.newest_beats()
        now = self._wall()
        up = self._monotonic() - self._started
        loops = []
        for hb in self.heartbeats:
            beat = beats.get(hb.loop)
            if beat is None:
                loops.append(self._no_beat(hb, up))
                continue
            self._seen.add(hb.loop)
            # A beat "from the future" (clocks are shared; only rounding gets here) is fresh.
            age = max(0.0, now - beat)
            if age > hb.max_age:
                loops.append(
                    LoopHealth(
                        hb.loop,
                        "stale",
                        hb.max_age,
                        age,
                        f"last heartbeat {age:.1f}s ago, limit {hb.max_age:g}s",
                    )
                )
            else:
                loops.append(LoopHealth(hb.loop, "ok", hb.max_age, age))
        return HeartbeatReport(tuple(loops))

    def _no_beat(self, hb: HeartbeatConfig, up: float) -> LoopHealth:
        if hb.loop in self._seen:
            # It was there and expired from the store (metrics.stale_after without exports).
            reason = "no heartbeat exported for longer than metrics.stale_after"
            return LoopHealth(hb.loop, "missing", hb.max_age, None, reason)
        if up < hb.grace:
            reason = f"no heartbeat yet; grace ends in {hb.grace - up:.1f}s"
            return LoopHealth(hb.loop, "waiting", hb.max_age, None, reason)
        reason = f"no heartbeat received in the {up:.0f}s since the sidecar started (grace {hb.grace:g}s)"
        return LoopHealth(hb.loop, "missing", hb.max_age, None, reason)
