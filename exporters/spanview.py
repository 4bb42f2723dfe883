"""A fast read of accepted OTLP trace batches, for aggregation.

The receivers decode and validate every request with opentelemetry-proto's
generated classes. Aggregating from those messages is slow in Python, though:
upb builds a wrapper object for every attribute KeyValue and every AnyValue
touched, ~400 ns per attribute, and a shim span carries ten. So the span
aggregators read the same bytes a second time through a *view*: the OTLP
descriptors, copied from opentelemetry-proto at import, with Span.attributes
and Span.status retyped as `bytes`. The protobuf runtime parses the view (it is
the same wire format); each attribute then arrives as the serialized KeyValue,
which is looked up in a cache keyed by those bytes and decoded with
opentelemetry-proto's KeyValue class only on a miss. Attributes repeat across
spans (exchange.id=binance, ccxt.method=fetch_ticker), so almost every lookup
hits. Measured: ~2.5x faster per span than walking the official messages.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["AttributeCache", "TracesView", "anyvalue_to_str", "status_code_of"]

_BYTES = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES


def _build_view() -> type[Message]:
    pool = descriptor_pool.DescriptorPool()
    for module in (common_pb2, resource_pb2, trace_pb2):
        proto = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(proto)
        if module is trace_pb2:
            for message in proto.message_type:
                if message.name != "Span":
                    continue
                for field in message.field:
                    if field.name in ("attributes", "status"):
                        field.type = _BYTES
                        field.ClearField("type_name")
        pool.Add(proto)
    # TracesData has the wire format of ExportTraceServiceRequest: field 1,
    # repeated ResourceSpans.
    descriptor = pool.FindMessageTypeByName("opentelemetry.proto.trace.v1.TracesData")
    return message_factory.GetMessageClass(descriptor)


TracesView: type[Message] = _build_view()


def anyvalue_to_str(value: common_pb2.AnyValue) -> str:
    """An attribute value as a label value: strings as they are, other scalars as
    OTel's Prometheus compatibility rules print them, arrays and maps as JSON-ish text."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    if kind == "bytes_value":
        return value.bytes_value.hex()
    if kind == "array_value":
        return "[" + ",".join(anyvalue_to_str(v) for v in value.array_value.values) + "]"
    if kind == "kvlist_value":
        return (
            "{"
            + ",".join(f"{kv.key}:{anyvalue_to_str(kv.value)}" for kv in value.kvlist_value.values)
            + "}"
        )
    return ""


class AttributeCache(dict[bytes, "tuple[str, str] | None"]):
    """Serialized KeyValue -> (key, value as text) for the keys some aggregator
    wants, or None for keys nobody wants.

    A dict, so that the hot loop can map `cache.__getitem__` over a span's
    attributes in C; a miss decodes with opentelemetry-proto's KeyValue in
    __missing__. Bounded: cleared when full, so a high-cardinality attribute (an
    order id) costs a decode per span, never memory. The entries are (key,
    value) pairs so that dict() turns a span's hits into its attribute map.
    """

    def __init__(self, wanted: set[str], max_entries: int = 8192) -> None:
        super().__init__()
        self.wanted = frozenset(wanted)
        self.max_entries = max_entries
        self.invalid = 0  # attributes that did not parse as a KeyValue

    def __missing__(self, raw: bytes) -> tuple[str, str] | None:
        try:
            kv = common_pb2.KeyValue.FromString(raw)
        except Exception:
            # The request as a whole passed opentelemetry-proto's decoder, so
            # this cannot happen for well-formed input; count it, never crash.
            self.invalid += 1
            return None
        entry = None
        if kv.key in self.wanted:
            entry = (kv.key, anyvalue_to_str(kv.value))
        if len(self) >= self.max_entries:
            self.clear()
        self[raw] = entry
        return entry


_STATUS_CACHE: dict[bytes, int] = {b"": 0}


def status_code_of(raw: bytes) -> int:
    """Status.code from a serialized Status (0 UNSET, 1 OK, 2 ERROR)."""
    try:
        return _STATUS_CACHE[raw]
    except KeyError:
        pass
    try:
        code = int(trace_pb2.Status.FromString(raw).code)
    except Exception:
        code = 0
    # Only messages without a description are worth keeping: those with one vary.
    if len(_STATUS_CACHE) < 64:
        _STATUS_CACHE[raw] = code
    return code


def resource_attributes(resource: Any) -> dict[str, common_pb2.AnyValue]:
    return {kv.key: kv.value for kv in resource.attributes}
