"""What both OTLP receivers do with a decoded metrics request: hand it to the
metric store (a MetricsConsumer), count, and build the response.

Metrics are translated as they arrive, without a queue: a data point is a few
microseconds of work (a span's aggregation is more), and the request body limit
bounds a request's work.
"""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)

from tickscope.core.consumer import MetricsConsumer
from tickscope.receivers.metrics import ReceiverMetrics

__all__ = ["MetricsIntake", "MetricsOutcome"]


@dataclass(frozen=True, slots=True)
class MetricsOutcome:
    accepted: int
    rejected: int
    message: str = ""

    def response(self) -> ExportMetricsServiceResponse:
        response = ExportMetricsServiceResponse()
        if self.rejected:
            response.partial_success.rejected_data_points = self.rejected
            response.partial_success.error_message = self.message
        return response


class MetricsIntake:
    def __init__(self, store: MetricsConsumer, metrics: ReceiverMetrics) -> None:
        self.store = store
        self.metrics = metrics

    def accept(self, request: ExportMetricsServiceRequest, receiver: str) -> MetricsOutcome:
        result = self.store.ingest(request)
        metrics = self.metrics
        metrics.received_points.labels(receiver).inc(
            result.accepted + sum(result.rejected.values())
        )
        metrics.accepted_points.labels(receiver).inc(result.accepted)
        for reason, count in result.rejected.items():
            metrics.rejected_points.labels(receiver, reason).inc(count)
        rejected = sum(result.rejected.values())
        return MetricsOutcome(result.accepted, rejected, "; ".join(result.messages))
