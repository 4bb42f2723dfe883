"""The sidecar's metrics about itself (prefix tickscope_)."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Counter, Gauge

from tickscope.agent.version import __version__

__all__ = ["SelfMetrics"]


class SelfMetrics:
    def __init__(self, registry: CollectorRegistry, collectors: list[str]) -> None:
        build_info = Gauge(
            "tickscope_build_info",
            "A metric with a constant '1' value labelled by version and Python version.",
            ["version", "python_version", "python_implementation"],
            registry=registry,
        )
        build_info.labels(
            __version__, platform.python_version(), platform.python_implementation()
        ).set(1)
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
