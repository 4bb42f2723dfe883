"""What receivers hand on, and the interfaces they hand it to.

As in the OpenTelemetry Collector, a receiver knows only the consumer interface
of the next stage, never the stage itself: the host wires the trace receivers to
the pipeline and the metrics receivers to the metric store.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Any, Protocol

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

__all__ = ["IngestResult", "MetricsConsumer", "TraceBatch", "TracesConsumer"]


@dataclass(frozen=True, slots=True)
class TraceBatch:
    """An accepted request: the serialized ExportTraceServiceRequest (protobuf,
    whatever encoding it arrived in, rejected spans removed; empty when nothing
    forwards it), its span count, and the parsed view of it (core.spanview)
    that the aggregators read."""

    payload: bytes
    spans: int
    receiver: str
    view: Any


class TracesConsumer(Protocol):
    @property
    def capacity(self) -> int:
        """Its bound, in spans (named in the 429's message)."""
        ...

    def is_full(self) -> bool:
        """Whether a new request would be refused (checked before reading a body:
        backpressure should be cheap)."""
        ...

    def offer(self, batch: TraceBatch) -> bool:
        """Take `batch` without waiting, or refuse it whole (False)."""
        ...


@dataclass
class IngestResult:
    """What a metrics consumer made of a request: points accepted, points
    rejected by reason, and up to five distinct messages for partial success."""

    accepted: int = 0
    rejected: collections.Counter[str] = field(default_factory=collections.Counter)
    messages: list[str] = field(default_factory=list)

    def reject(self, reason: str, count: int, message: str) -> None:
        if count <= 0:
            return
        self.rejected[reason] += count
        if len(self.messages) < 5 and message not in self.messages:
            self.messages.append(message)


class MetricsConsumer(Protocol):
    def ingest(self, request: ExportMetricsServiceRequest) -> IngestResult: ...
