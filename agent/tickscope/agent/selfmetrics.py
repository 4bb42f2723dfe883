"""The sidecar's build info (prefix tickscope_); each component registers its own
self-metrics beside its code (collectors/metrics.py, receivers/metrics.py, ...)."""

from __future__ import annotations

import platform

from prometheus_client import CollectorRegistry, Gauge

from tickscope.agent.version import __version__

__all__ = ["register_build_info"]


def register_build_info(registry: CollectorRegistry) -> None:
    build_info = Gauge(
        "tickscope_build_info",
        "A metric with a constant '1' value labelled by version and Python version.",
        ["version", "python_version", "python_implementation"],
        registry=registry,
    )
    build_info.labels(__version__, platform.python_version(), platform.python_implementation()).set(
        1
    )
