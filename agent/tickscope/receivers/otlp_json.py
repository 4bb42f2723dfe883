"""OTLP's JSON encoding: the protobuf JSON mapping, except that trace and span ids
are hex strings (the mapping would expect base64), and unknown fields MUST be
ignored. Ids are converted in place, then json_format parses the rest into
opentelemetry-proto's generated classes.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any, TypeVar

from google.protobuf import json_format
from google.protobuf.message import Message
from google.rpc import code_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tickscope.receivers.errors import RequestError

__all__ = ["decode_metrics_json", "decode_traces_json"]

M = TypeVar("M", bound=Message)

_SPAN_IDS = ("traceId", "trace_id", "spanId", "span_id", "parentSpanId", "parent_span_id")
_LINK_IDS = ("traceId", "trace_id", "spanId", "span_id")
_POINT_KINDS = ("gauge", "sum", "histogram", "exponentialHistogram", "exponential_histogram")


def _malformed(message: str) -> RequestError:
    return RequestError(400, "malformed", message, code_pb2.INVALID_ARGUMENT)


def _hex_to_base64(value: Any, where: str) -> Any:
    if not isinstance(value, str):
        return value
    try:
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    except ValueError:
        raise _malformed(f"{where}: not a hex string: {value[:40]!r}") from None


def _items(obj: Any, *keys: str) -> list[Any]:
    """The list under the first of `keys` present in `obj`, or [] for anything
    that is not a dict holding a list (json_format then reports the real error)."""
    if not isinstance(obj, dict):
        return []
    for key in keys:
        if key in obj:
            value = obj[key]
            return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []
    return []


def _convert(obj: dict[str, Any], keys: tuple[str, ...], where: str) -> None:
    for key in keys:
        if key in obj:
            obj[key] = _hex_to_base64(obj[key], f"{where}.{key}")


def _span_ids(request: dict[str, Any]) -> None:
    for rs in _items(request, "resourceSpans", "resource_spans"):
        for ss in _items(rs, "scopeSpans", "scope_spans"):
            for i, span in enumerate(_items(ss, "spans")):
                _convert(span, _SPAN_IDS, f"spans[{i}]")
                for link in _items(span, "links"):
                    _convert(link, _LINK_IDS, f"spans[{i}].links")


def _exemplar_ids(request: dict[str, Any]) -> None:
    for rm in _items(request, "resourceMetrics", "resource_metrics"):
        for sm in _items(rm, "scopeMetrics", "scope_metrics"):
            for i, metric in enumerate(_items(sm, "metrics")):
                for kind in _POINT_KINDS:
                    for point in _items(metric.get(kind), "dataPoints", "data_points"):
                        for exemplar in _items(point, "exemplars"):
                            _convert(exemplar, _LINK_IDS, f"metrics[{i}].exemplars")


def _parse(body: bytes, message: M, fix_ids: Callable[[dict[str, Any]], None]) -> M:
    try:
        obj = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise _malformed(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _malformed("invalid OTLP JSON: the top level must be an object")
    fix_ids(obj)
    try:
        json_format.ParseDict(obj, message, ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise _malformed(f"invalid OTLP JSON: {exc}") from None
    return message


def decode_traces_json(body: bytes) -> ExportTraceServiceRequest:
    return _parse(body, ExportTraceServiceRequest(), _span_ids)


def decode_metrics_json(body: bytes) -> ExportMetricsServiceRequest:
    return _parse(body, ExportMetricsServiceRequest(), _exemplar_ids)
