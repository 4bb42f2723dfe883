"""What both OTLP receivers do with a decoded trace request: check each span,
count, and offer the request to the pipeline.

Requests arrive parsed into exporters.spanview's view (see there for why);
the checks below read the same fields as they would on ExportTraceServiceRequest.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tickscope.core.consumer import TraceBatch, TracesConsumer
from tickscope.receivers.metrics import ReceiverMetrics

__all__ = ["Intake", "Outcome"]

_ZERO_TRACE = bytes(16)
_ZERO_SPAN = bytes(8)


@dataclass(frozen=True, slots=True)
class Outcome:
    """accepted: spans queued; rejected: spans refused as invalid (partial success);
    refused: the whole request was not queued (the pipeline is full)."""

    accepted: int
    rejected: int
    refused: bool = False
    message: str = ""

    def response(self) -> ExportTraceServiceResponse:
        response = ExportTraceServiceResponse()
        if self.rejected:
            response.partial_success.rejected_spans = self.rejected
            response.partial_success.error_message = self.message
        return response


def _drop_invalid(request: Any) -> int:
    """Remove spans whose ids the specification calls invalid; return how many.

    A trace id is 16 bytes and a span id 8, neither all zeros. Such a span
    cannot be joined to its trace, and an exemplar pointing at it would lead
    nowhere.
    """
    removed = 0
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans
            bad = [
                i
                for i, span in enumerate(spans)
                if len(tid := span.trace_id) != 16
                or tid == _ZERO_TRACE
                or len(sid := span.span_id) != 8
                or sid == _ZERO_SPAN
            ]
            for i in reversed(bad):
                del spans[i]
            removed += len(bad)
    return removed


def count_spans(request: Any) -> int:
    return sum(
        len(scope_spans.spans)
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
    )


_trace_id = attrgetter("trace_id")
_span_id = attrgetter("span_id")


def _all_ids_valid(request: Any) -> bool:
    # map() over attrgetter keeps the per-span work in C: this runs for every span.
    # The spans are sliced into a list first so that both passes share one
    # wrapper object per span.
    for resource_spans in request.resource_spans:
        for scope_spans in resource_spans.scope_spans:
            spans = scope_spans.spans[:]
            if not spans:
                continue
            trace_ids = list(map(_trace_id, spans))
            span_ids = list(map(_span_id, spans))
            if set(map(len, trace_ids)) != {16} or set(map(len, span_ids)) != {8}:
                return False
            if _ZERO_TRACE in trace_ids or _ZERO_SPAN in span_ids:
                return False
    return True


class Intake:
    def __init__(
        self, pipeline: TracesConsumer, metrics: ReceiverMetrics, keep_payload: bool = True
    ) -> None:
        self.pipeline = pipeline
        self.metrics = metrics
        # Only the forwarder reads a batch's bytes: without it, a full queue holds
        # the parsed requests alone (~0.75 KiB a span) rather than ~1.1 KiB with them.
        self.keep_payload = keep_payload

    def accept(self, request: Any, payload: bytes, receiver: str) -> Outcome:
        """`request` is the parsed view, `payload` its bytes (as received, for protobuf)."""
        total = count_spans(request)
        metrics = self.metrics
        metrics.received.labels(receiver).inc(total)
        rejected = 0
        if not _all_ids_valid(request):
            rejected = _drop_invalid(request)
            if self.keep_payload:
                payload = request.SerializeToString()
        accepted = total - rejected
        message = (
            f"{rejected} span(s) rejected: trace_id must be 16 bytes and span_id 8 bytes, "
            "not all zeros"
            if rejected
            else ""
        )
        batch = TraceBatch(payload if self.keep_payload else b"", accepted, receiver, request)
        if accepted and not self.pipeline.offer(batch):
            # The client retries the whole request: its invalid spans are counted then.
            metrics.rejected_spans.labels(receiver, "queue_full").inc(accepted)
            metrics.rejected_requests.labels(receiver, "queue_full").inc()
            return Outcome(0, rejected, refused=True, message=message)
        if rejected:
            metrics.rejected_spans.labels(receiver, "invalid_span").inc(rejected)
        metrics.accepted.labels(receiver).inc(accepted)
        return Outcome(accepted, rejected, message=message)
