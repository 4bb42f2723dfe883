"""The shim's exchange metrics read in memory, and one clock for the simulator and
the shim (tests/test_shim_marketdata.py, test_shim_clock.py, test_shim_account.py)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from tickscope.shim import account, clock, marketdata

Attributes = frozenset[tuple[str, Any]]


@dataclass
class Metrics:
    provider: MeterProvider
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def collect(self) -> dict[str, dict[Attributes, Any]]:
        """metric name -> attributes -> value (a number, or for a histogram
        (count, sum, bucket counts))."""
        found: dict[str, dict[Attributes, Any]] = {}
        data = self.reader.get_metrics_data()
        if data is None:
            return found
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points = found.setdefault(metric.name, {})
                    for point in metric.data.data_points:
                        key = frozenset((point.attributes or {}).items())
                        if hasattr(point, "bucket_counts"):
                            points[key] = (point.count, point.sum, tuple(point.bucket_counts))
                        else:
                            points[key] = point.value
        return {name: points for name, points in found.items() if points}

    def scopes(self) -> set[str]:
        data = self.reader.get_metrics_data()
        if data is None:
            return set()
        return {sm.scope.name for rm in data.resource_metrics for sm in rm.scope_metrics}


def attrs(**labels: Any) -> Attributes:
    """Attributes as Metrics.collect keys them; `overflow=True` is otel.metric.overflow."""
    if labels.pop("overflow", False):
        labels["otel.metric.overflow"] = True
    return frozenset(labels.items())


@pytest.fixture
def shim_metrics() -> Iterator[Metrics]:
    """A fresh in-memory meter provider, and the shim's figures forgotten before and
    after (they are process-wide)."""
    marketdata.reset()
    account.reset()
    clock.reset()
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    tracer_provider = TracerProvider()
    yield Metrics(provider, reader, tracer_provider)
    provider.shutdown()
    tracer_provider.shutdown()
    marketdata.reset()
    account.reset()
    clock.reset()


class SharedClock:
    """One wall clock for the simulator (its _wall_ms) and the shim (clock.now):
    it stands still between `step()`s, so ages and skews come out exact. `step()`
    moves it to the real time (signed requests are stamped with ccxt's own clock,
    which the simulator judges against this one)."""

    def __init__(self) -> None:
        self.ms = time.time_ns() // 1_000_000

    def step(self, to_ms: int | None = None) -> int:
        self.ms = time.time_ns() // 1_000_000 if to_ms is None else to_ms
        return self.ms

    @property
    def seconds(self) -> float:
        return self.ms / 1000


@pytest.fixture
def shared_clock(monkeypatch: pytest.MonkeyPatch) -> Iterator[SharedClock]:
    import exchange_simulator

    shared = SharedClock()
    monkeypatch.setattr(exchange_simulator, "_wall_ms", lambda: shared.ms)
    previous = clock.set_time_source(lambda: shared.ms / 1000)
    yield shared
    clock.set_time_source(previous)
