"""Reading span metrics out of a scrape."""

from __future__ import annotations

from prometheus_client.metrics_core import Metric

from helpers.sidecar import SidecarProcess


def calls(families: dict[str, Metric], service: str, **labels: str) -> float:
    family = families.get("traces_span_metrics_calls")
    if family is None:
        return 0.0
    total = 0.0
    for s in family.samples:
        if s.labels.get("service_name") == service and all(
            s.labels.get(k) == v for k, v in labels.items()
        ):
            total += s.value
    return total


def buckets(families: dict[str, Metric], service: str, span_name: str) -> dict[str, float]:
    family = families["traces_span_metrics_duration_seconds"]
    return {
        s.labels["le"]: s.value
        for s in family.samples
        if s.name.endswith("_bucket")
        and s.labels.get("service_name") == service
        and s.labels.get("span_name") == span_name
    }


def wait_for_calls(
    s: SidecarProcess, service: str, expected: float, **labels: str
) -> dict[str, Metric]:
    def done() -> dict[str, Metric] | None:
        families = s.families()
        return families if calls(families, service, **labels) >= expected else None

    return s.wait_until(done, timeout=10, what=f"{expected} calls for {service}")
