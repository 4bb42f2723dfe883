"""The collectors' own metrics: duration, errors and last success per collector."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["CollectorMetrics"]


class CollectorMetrics:
    def __init__(self, registry: CollectorRegistry, collectors: Iterable[str]) -> None:
        self.collect_duration = Gauge(
            "tickscope_collect_duration_seconds",
            "Duration of the last collection, per collector.",
            ["collector"],
            registry=registry,
        )
        self.collect_errors = Counter(
            "tickscope_collect_errors_total",
            "Collections, or parts of one, that failed or timed out, per collector.",
            ["collector"],
            registry=registry,
        )
        self.collect_last_success = Gauge(
            "tickscope_collect_last_success_timestamp_seconds",
            "Unix time of the last collection that completed, per collector.",
            ["collector"],
            registry=registry,
        )
        # Create every child up front so that a counter with no errors yet reads 0
        # instead of being absent (rate() over an absent series is no data).
        for name in collectors:
            self.collect_errors.labels(name)
