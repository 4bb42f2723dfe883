"""What every collector provides, and the snapshot a scrape is served from."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

__all__ = ["CollectResult", "Snapshot", "SnapshotCollector", "Source"]


@dataclass(frozen=True, slots=True)
class CollectResult:
    """One collection: every family it produced, and what went wrong on the way.

    A part that fails (one filesystem, the sensors) is left out and named in
    `errors`; the rest of the collection still counts, as in node_exporter.
    """

    families: Sequence[Metric]
    errors: Sequence[str] = field(default_factory=tuple)


class Source(Protocol):
    """A collector body. `collect` blocks (psutil, /proc, statvfs) and runs in a
    worker thread, never on the event loop."""

    @property
    def name(self) -> str: ...

    @property
    def interval(self) -> float: ...

    def collect(self) -> CollectResult: ...

    def readiness(self) -> Mapping[str, str | None]:
        """Readiness conditions this source decides: name -> reason it is not
        ready, or None when it is. Read on the event loop after each collection."""
        ...

    def status(self) -> dict[str, Any]:
        """What the status page shows about this source."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Snapshot:
    families: tuple[Metric, ...]
    wall_time: float
    monotonic: float


class SnapshotCollector(Collector):
    """Serves the last published snapshot to prometheus_client.

    Publishing swaps one reference, so a scrape sees a whole collection or the
    previous whole one, never a mix. A snapshot older than `max_age` is not served:
    a stuck collector yields no data rather than old data passed off as current.
    """

    def __init__(self, max_age: float) -> None:
        self.max_age = max_age
        self._snapshot: Snapshot | None = None

    def publish(self, families: Iterable[Metric]) -> None:
        self._snapshot = Snapshot(tuple(families), time.time(), time.monotonic())

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def describe(self) -> list[Metric]:
        # Registration must not trigger a collection; the names are dynamic anyway.
        return []

    def collect(self) -> Iterator[Metric]:
        snapshot = self._snapshot
        if snapshot is None or time.monotonic() - snapshot.monotonic > self.max_age:
            return iter(())
        return iter(snapshot.families)
