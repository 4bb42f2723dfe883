"""Building OTLP data for tests: real OTel SDK spans with exact durations, raw requests."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter
from opentelemetry.trace import SpanKind
from opentelemetry.trace import Status as SDKStatus
from opentelemetry.trace import StatusCode as SDKStatusCode

BASE_NS = 1_700_000_000_000_000_000


@contextmanager
def sdk_tracer(exporter: SpanExporter, service: str) -> Iterator[Any]:
    """A real SDK TracerProvider exporting each span as it ends (one request per span)."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    try:
        yield provider.get_tracer("tickscope.tests")
    finally:
        provider.shutdown()


def sdk_span(
    tracer: Any,
    name: str,
    seconds: float,
    attributes: dict[str, Any] | None = None,
    error: str | None = None,
    kind: SpanKind = SpanKind.CLIENT,
) -> None:
    """One span of exactly `seconds`, ended (and so exported) before returning."""
    start = BASE_NS
    span = tracer.start_span(name, kind=kind, attributes=attributes or {}, start_time=start)
    if error is not None:
        span.set_attribute("error.type", error)
        span.set_status(SDKStatus(SDKStatusCode.ERROR))
    span.end(end_time=start + round(seconds * 1e9))


def kv(key: str, value: str | int | float | bool) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def request(
    service: str,
    spans: Sequence[dict[str, Any]],
    resource: dict[str, Any] | None = None,
) -> ExportTraceServiceRequest:
    """An ExportTraceServiceRequest from span dicts: name, seconds, attributes,
    and optionally status (0/1/2), kind, trace_id, span_id."""
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(
        [kv("service.name", service)] + [kv(k, v) for k, v in (resource or {}).items()]
    )
    ss = rs.scope_spans.add()
    ss.scope.name = "tickscope.tests"
    for i, spec in enumerate(spans):
        span = ss.spans.add()
        span.trace_id = spec.get("trace_id", os.urandom(16))
        span.span_id = spec.get("span_id", os.urandom(8))
        span.name = spec["name"]
        span.kind = spec.get("kind", Span.SPAN_KIND_CLIENT)
        span.start_time_unix_nano = BASE_NS + i
        span.end_time_unix_nano = BASE_NS + i + round(spec.get("seconds", 0.001) * 1e9)
        span.attributes.extend(kv(k, v) for k, v in spec.get("attributes", {}).items())
        if spec.get("status"):
            span.status.code = spec["status"]
            if spec["status"] == Status.STATUS_CODE_ERROR and "message" in spec:
                span.status.message = spec["message"]
    return req


def many(name: str, count: int, **spec: Any) -> list[dict[str, Any]]:
    return [{"name": name, **spec} for _ in range(count)]


def to_otlp_json(req: ExportTraceServiceRequest) -> bytes:
    """OTLP JSON: the protobuf JSON mapping, with trace and span ids in hex."""
    import base64
    import json

    from google.protobuf import json_format

    obj = json_format.MessageToDict(req)
    for rs in obj.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(obj).encode()


PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
