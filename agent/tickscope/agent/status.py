"""The status page (GET /): one typed snapshot of the sidecar, served as JSON
(`?format=json`) or as text for a person at a terminal."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CollectorStatus",
    "EngineProcessStatus",
    "ForwardStatus",
    "HeartbeatStatus",
    "ReadinessCheck",
    "SpanStatus",
    "Status",
]


@dataclass(frozen=True, slots=True)
class ReadinessCheck:
    name: str
    ready: bool
    reason: str


@dataclass(frozen=True, slots=True)
class CollectorStatus:
    name: str
    interval_seconds: float
    last_duration_seconds: float | None
    last_success_age_seconds: float | None
    errors: int


@dataclass(frozen=True, slots=True)
class EngineProcessStatus:
    name: str
    up: bool
    pid: int | None
    restarts: int
    required: bool
    match: str
    reason: str | None = None  # why it is not up (a pid file that is not a regular file, ...)


@dataclass(frozen=True, slots=True)
class HeartbeatStatus:
    """An engine loop's heartbeat as /engine/healthz judges it."""

    loop: str
    status: str  # ok, waiting, stale, missing
    age_seconds: float | None  # since the last beat; None before the first
    max_age_seconds: float
    reason: str | None = None


@dataclass(frozen=True, slots=True)
class ForwardStatus:
    endpoint: str
    sent: int


@dataclass(frozen=True, slots=True)
class SpanStatus:
    per_second: float
    processed: int
    queued: int
    queue_capacity: int
    receivers: dict[str, int | None]
    series: int | None = None
    series_limit: int | None = None
    forward: ForwardStatus | None = None


@dataclass(frozen=True, slots=True)
class Status:
    version: str
    uptime_seconds: float
    ready: bool
    readiness: list[ReadinessCheck] = field(default_factory=list)
    collectors: list[CollectorStatus] = field(default_factory=list)
    engine_processes: list[EngineProcessStatus] = field(default_factory=list)
    spans: SpanStatus | None = None
    heartbeats: list[HeartbeatStatus] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The JSON document: sections and fields that do not apply are left out."""
        document: dict[str, Any] = _without_none(dataclasses.asdict(self))
        return document

    def to_text(self) -> str:
        lines = [
            f"tickscope {self.version}",
            f"uptime: {self.uptime_seconds:.0f}s   ready: {'yes' if self.ready else 'no'}",
        ]
        for check in self.readiness:
            if not check.ready:
                lines.append(f"  not ready: {check.name}: {check.reason}")
        lines.append("")
        lines.append("collectors:")
        for c in self.collectors:
            took = (
                "-"
                if c.last_duration_seconds is None
                else f"{c.last_duration_seconds * 1000:.2f} ms"
            )
            lines.append(
                f"  {c.name:<16} every {c.interval_seconds:g}s   last took {took}"
                f"   last success {_age(c.last_success_age_seconds)}   errors {c.errors}"
            )
        spans = self.spans
        if spans is not None:
            lines.append("")
            receivers = "  ".join(f"{k} :{v}" for k, v in spans.receivers.items())
            lines.append(
                f"spans: {spans.per_second:.0f}/s   processed {spans.processed}   receivers {receivers}"
            )
            lines.append(f"  queue {spans.queued}/{spans.queue_capacity} spans")
            if spans.series is not None:
                lines.append(f"  span metrics series {spans.series}/{spans.series_limit}")
            if spans.forward is not None:
                lines.append(
                    f"  forwarding to {spans.forward.endpoint}: {spans.forward.sent} spans sent"
                )
        lines.append("")
        processes = self.engine_processes
        lines.append("engine processes:" if processes else "engine processes: none configured")
        for p in processes:
            state = f"up, pid {p.pid}" if p.up else "DOWN"
            if p.reason and not p.up:
                state += f" ({p.reason})"
            lines.append(
                f"  {p.name:<16} {state:<16} restarts {p.restarts}"
                f"   {'required' if p.required else 'optional'}   ({p.match})"
            )
        if self.heartbeats:
            lines.append("")
            lines.append("engine heartbeats (/engine/healthz):")
            for h in self.heartbeats:
                beat = "never" if h.age_seconds is None else f"{h.age_seconds:.1f}s ago"
                state = h.status if h.status in ("ok", "waiting") else h.status.upper()
                lines.append(
                    f"  {h.loop:<16} {state:<8} last beat {beat}   limit {h.max_age_seconds:g}s"
                    + (f"   ({h.reason})" if h.reason and h.status != "ok" else "")
                )
        lines.append("")
        lines.append("endpoints: /metrics  /healthz  /readyz  /engine/healthz  /?format=json")
        return "\n".join(lines) + "\n"


def _age(seconds: float | None) -> str:
    return "never" if seconds is None else f"{seconds:.1f}s ago"


def _without_none(value: Any) -> Any:
    # Only the optional sections (spans.series, spans.forward, a check's reason)
    # are None; a collector that has not run yet keeps its nulls, they mean "never".
    if isinstance(value, dict):
        return {
            k: _without_none(v)
            for k, v in value.items()
            if v is not None
            or k in ("last_duration_seconds", "last_success_age_seconds", "pid", "age_seconds")
        }
    if isinstance(value, list):
        return [_without_none(v) for v in value]
    return value
