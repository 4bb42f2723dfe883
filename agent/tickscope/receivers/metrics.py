"""The receivers' counters: what came in, what was taken, what was turned away and why."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

__all__ = ["REQUEST_REASONS", "SPAN_REASONS", "ReceiverMetrics"]

# Whole requests turned away (the span count is unknown or the request never got
# as far as counting): one label value per cause a client can act on, the same
# for OTLP/HTTP and OTLP/gRPC (for gRPC: "unsupported_media_type" is a
# content-type other than application/grpc, "read_timeout" a message still
# unfinished at max_connection_age_grace, "malformed" also a broken HTTP/2 stream).
REQUEST_REASONS = (
    "malformed",  # not decodable as OTLP (protobuf or JSON), or a broken gzip stream
    "unsupported_media_type",  # Content-Type other than protobuf or JSON
    "unsupported_encoding",  # Content-Encoding other than gzip or identity
    "too_large",  # body over receiver.http.max_body_bytes (after decompression)
    "queue_full",  # the pipeline could not take it: retry later
    "shutting_down",
    "client_disconnected",  # the client closed the connection mid-body (logged rate-limited)
    "read_timeout",  # body not received within receiver.http.body_read_timeout: 408
    "internal",  # a bug; logged with its traceback
)
# Spans of decodable requests that were not accepted.
SPAN_REASONS = ("invalid_span", "queue_full")


class ReceiverMetrics:
    def __init__(self, registry: CollectorRegistry, receivers: tuple[str, ...]) -> None:
        self.received = Counter(
            "tickscope_receiver_received_spans_total",
            "Spans in decodable requests, accepted or not.",
            ["receiver"],
            registry=registry,
        )
        self.accepted = Counter(
            "tickscope_receiver_accepted_spans_total",
            "Spans accepted into the pipeline.",
            ["receiver"],
            registry=registry,
        )
        self.rejected_spans = Counter(
            "tickscope_receiver_rejected_spans_total",
            "Spans of decodable requests not accepted, by reason.",
            ["receiver", "reason"],
            registry=registry,
        )
        self.rejected_requests = Counter(
            "tickscope_receiver_rejected_requests_total",
            "Requests turned away as a whole, by reason.",
            ["receiver", "reason"],
            registry=registry,
        )
        self.received_points = Counter(
            "tickscope_receiver_received_points_total",
            "Metric data points in decodable requests.",
            ["receiver"],
            registry=registry,
        )
        self.accepted_points = Counter(
            "tickscope_receiver_accepted_points_total",
            "Metric data points translated into Prometheus series.",
            ["receiver"],
            registry=registry,
        )
        self.rejected_points = Counter(
            "tickscope_receiver_rejected_points_total",
            "Metric data points not accepted, by reason (reported to the client as partial success).",
            ["receiver", "reason"],
            registry=registry,
        )
        self.duration = Histogram(
            "tickscope_receiver_request_duration_seconds",
            "Time to handle an export request, from body read to response.",
            ["receiver"],
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0),
            registry=registry,
        )
        for receiver in receivers:
            self.received_points.labels(receiver)
            self.accepted_points.labels(receiver)
            self.received.labels(receiver)
            self.accepted.labels(receiver)
            self.duration.labels(receiver)
            for reason in SPAN_REASONS:
                self.rejected_spans.labels(receiver, reason)
            for reason in REQUEST_REASONS:
                self.rejected_requests.labels(receiver, reason)
