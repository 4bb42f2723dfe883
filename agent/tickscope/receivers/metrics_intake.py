"""What both OTLP receivers do with a decoded metrics request: hand it to the
metric store (a MetricsConsumer), count, and build the response.

Metrics are translated as they arrive, without a queue. A data point costs about
5 us in the store (600k points of bench/otlp_batches.py's shape took 3.2 s), so a
request at the 20 MiB body limit (~190k such points) would hold the event loop
for ~1 s in one go; `accept_async` hands the store pieces of at most
`INGEST_PIECE_POINTS` points and yields to the loop between them, so /healthz and
/metrics keep being answered while a large request is translated.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.metrics.v1 import metrics_pb2

from tickscope.core.consumer import IngestResult, MetricsConsumer
from tickscope.receivers.metrics import ReceiverMetrics

__all__ = ["INGEST_PIECE_POINTS", "MetricsIntake", "MetricsOutcome", "split_request"]

# 10,000 points took 78 ms of store work on average here (108 ms at most, 1.57 s for
# the 20 pieces of a 20 MiB request); 5,000 keeps a piece well under the 250 ms
# heartbeat period even on a loaded machine.
INGEST_PIECE_POINTS = 5_000


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


def _points(metric: metrics_pb2.Metric) -> tuple[str | None, Any]:
    kind = metric.WhichOneof("data")
    if kind is None:
        return None, ()
    return kind, getattr(metric, kind).data_points


def count_points(request: ExportMetricsServiceRequest) -> int:
    return sum(
        len(_points(metric)[1])
        for rm in request.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
    )


def _copy_without_points(source: Any, target: Any, skip: str) -> None:
    """Copy every set field of `source` into `target` except `skip`."""
    for field, value in source.ListFields():
        if field.name == skip:
            continue
        if field.is_repeated:
            getattr(target, field.name).extend(value)
        elif field.message_type is not None:
            getattr(target, field.name).CopyFrom(value)
        else:
            setattr(target, field.name, value)


def split_request(
    request: ExportMetricsServiceRequest, max_points: int
) -> Iterator[ExportMetricsServiceRequest]:
    """The request itself when it has at most `max_points` points; otherwise pieces of
    at most `max_points` points each, in order, every point under a copy of its own
    resource, scope and metric (name, unit, description, temporality, monotonicity)."""
    if count_points(request) <= max_points:
        yield request
        return
    piece = ExportMetricsServiceRequest()
    size = 0
    for rm in request.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                kind, points = _points(metric)
                start = 0
                while True:
                    room = max_points - size
                    if room <= 0:
                        yield piece
                        piece, size = ExportMetricsServiceRequest(), 0
                        room = max_points
                    taken = points[start : start + room]
                    out_rm = piece.resource_metrics[-1] if piece.resource_metrics else None
                    if (
                        out_rm is None
                        or out_rm.resource != rm.resource
                        or out_rm.schema_url != rm.schema_url
                    ):
                        out_rm = piece.resource_metrics.add()
                        _copy_without_points(rm, out_rm, "scope_metrics")
                    out_sm = out_rm.scope_metrics[-1] if out_rm.scope_metrics else None
                    if (
                        out_sm is None
                        or out_sm.scope != sm.scope
                        or out_sm.schema_url != sm.schema_url
                    ):
                        out_sm = out_rm.scope_metrics.add()
                        _copy_without_points(sm, out_sm, "metrics")
                    out = out_sm.metrics.add()
                    _copy_without_points(metric, out, kind or "")
                    if kind is not None:
                        data = getattr(out, kind)
                        _copy_without_points(getattr(metric, kind), data, "data_points")
                        data.SetInParent()
                        data.data_points.extend(taken)
                    size += len(taken)
                    start += len(taken)
                    if start >= len(points):
                        break
    if size or not piece.resource_metrics:
        yield piece


class MetricsIntake:
    def __init__(
        self,
        store: MetricsConsumer,
        metrics: ReceiverMetrics,
        piece_points: int = INGEST_PIECE_POINTS,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.piece_points = piece_points

    def accept(self, request: ExportMetricsServiceRequest, receiver: str) -> MetricsOutcome:
        """The whole request in one go (on the caller's thread): for small requests."""
        return self._count(self.store.ingest(request), receiver)

    async def accept_async(
        self, request: ExportMetricsServiceRequest, receiver: str
    ) -> MetricsOutcome:
        """The request in pieces of at most `piece_points` points, yielding to the event
        loop between them; the outcome is the pieces' sum."""
        total = IngestResult()
        first = True
        for piece in split_request(request, self.piece_points):
            if not first:
                await asyncio.sleep(0)
            first = False
            result = self.store.ingest(piece)
            total.accepted += result.accepted
            total.rejected.update(result.rejected)
            for message in result.messages:
                if len(total.messages) < 5 and message not in total.messages:
                    total.messages.append(message)
        return self._count(total, receiver)

    def _count(self, result: IngestResult, receiver: str) -> MetricsOutcome:
        metrics = self.metrics
        metrics.received_points.labels(receiver).inc(
            result.accepted + sum(result.rejected.values())
        )
        metrics.accepted_points.labels(receiver).inc(result.accepted)
        for reason, count in result.rejected.items():
            metrics.rejected_points.labels(receiver, reason).inc(count)
        rejected = sum(result.rejected.values())
        return MetricsOutcome(result.accepted, rejected, "; ".join(result.messages))
