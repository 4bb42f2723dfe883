"""The one parse of an OTLP trace request, shaped for speed.

Aggregating spans from opentelemetry-proto's generated messages is slow in
Python: upb builds a wrapper object for every attribute KeyValue and AnyValue
touched, ~400 ns per attribute, and a shim span carries ten. So requests are
parsed through a *view*: opentelemetry-proto's own descriptors, copied at import,
with Span.attributes and Span.status retyped as `bytes` (the same wire format,
so the protobuf runtime checks the request's structure, though not what is
inside an attribute or a status: those are checked when decoded, below).
Each attribute then arrives as its serialized KeyValue, which is looked up in a
cache keyed by those bytes and decoded with opentelemetry-proto's KeyValue class
on a miss. Attributes repeat across spans (exchange.id=binance,
ccxt.method=fetch_ticker), so almost every lookup hits. Measured: the receiver
plus aggregation costs ~2x less per span than decoding with
ExportTraceServiceRequest and walking its messages.

Tried and measured slower: retyping Span.attributes as map<string, AnyValue>
(or map<string, bytes>), which is wire-compatible with repeated KeyValue and
would let the loop read attributes by key. Parsing the maps costs ~0.35-0.5 µs
more per span, and each `in`/`[]` on a upb map ~0.12-0.17 µs, so reading the
five or so attributes the aggregators need costs more than this cache does for all ten.

The view has ExportTraceServiceRequest's wire format (it is TracesData: field 1,
repeated ResourceSpans), so it serializes back to a valid request.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import Message
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.resource.v1 import resource_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = ["AttributeCache", "TracesView", "anyvalue_to_str", "decode_traces", "status_code_of"]

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


def decode_traces(body: bytes) -> Any:
    """Parse a serialized ExportTraceServiceRequest into the view; raises
    google.protobuf.message.DecodeError when the bytes are not one."""
    return TracesView.FromString(body)


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


class AttributeCache:
    """Serialized KeyValue -> a number standing for its (key, value as text), for
    the keys some aggregator wants, or None for keys nobody wants.

    `entries` is a plain dict so that the hot loop can map its __getitem__ over
    a span's attributes in C (a dict subclass with __missing__ is ~2x slower
    there); a KeyError sends the span through `resolve`, which decodes the
    misses with opentelemetry-proto's KeyValue. What the loop gets for a span,
    one number or None per attribute, is its *signature*: spans with equal
    signatures agree on every wanted attribute. Numbers rather than the pairs
    themselves because a tuple of ints hashes several times faster than a tuple
    of tuples, and the signature is hashed once per span; `pairs` turns them
    back. A number is never reused for another pair, so a signature made before
    a reset can never match one made after it.

    Keys in `marked` (values that change from span to span, such as rate-limit
    counters) are wanted only for whether a span has them: they all stand for
    (key, ""), so that they do not split signatures; their values are read with
    `texts`. Bounded: `entries` is cleared when full, so a high-cardinality
    attribute (an order id) costs a decode per span, never memory; the pairs
    too, when there are too many distinct wanted values (signatures made
    before then simply never match again).
    """

    def __init__(
        self,
        wanted: set[str] | frozenset[str],
        marked: frozenset[str] = frozenset(),
        max_entries: int = 8192,
        max_pairs: int = 16384,
        max_value_length: int = 65536,
    ) -> None:
        self.wanted = frozenset(wanted)
        self.marked = marked - self.wanted
        self.max_entries = max_entries
        self.max_pairs = max_pairs
        # Values are held cut to one character past the longest label value any
        # aggregator keeps, so that it still sees that they were longer (and cuts
        # them with its marker): the pairs hold at most max_pairs such values.
        self.max_value_length = max_value_length
        # Bounded in bytes, not only in entries: a KeyValue longer than any label
        # value could be in full (4 bytes per character in UTF-8, plus the key and
        # the framing) is decoded each time it is seen rather than kept, so the
        # entries hold at most max_entries * max_entry_bytes (8,192 x 768 B = 6 MiB
        # at a 128-character limit) where 8,192 distinct 1 MB values would hold 8 GiB.
        self.max_entry_bytes = 4 * max_value_length + 256
        self.entries: dict[bytes, int | None] = {}
        self._numbers: dict[tuple[str, str], int] = {}
        self._pairs: dict[int, tuple[str, str]] = {}
        self._next = 0
        self.invalid = 0  # attributes that did not parse as a KeyValue

    def resolve(self, attributes: Iterable[bytes]) -> tuple[int | None, ...]:
        """The signature of one span, decoding what the cache lacks."""
        if len(self._pairs) >= self.max_pairs:
            # Only here, before a span's signature is begun, so that all the
            # numbers of one signature come from one generation.
            self.entries.clear()
            self._numbers.clear()
            self._pairs.clear()
        entries = self.entries
        found: list[int | None] = []
        for raw in attributes:
            try:
                number = entries[raw]
            except KeyError:
                number = self._decode(raw)
            found.append(number)
        return tuple(found)

    def pairs(self, signature: Iterable[int | None]) -> dict[str, str]:
        """A signature's wanted attributes, key -> value as text."""
        pairs = self._pairs
        return dict(pairs[number] for number in signature if number is not None)

    def _decode(self, raw: bytes) -> int | None:
        try:
            kv = common_pb2.KeyValue.FromString(raw)
        except Exception:
            # Not a KeyValue: the request's structure parsed, but this attribute's
            # inside does not. Ignore the attribute, count it, never crash.
            self.invalid += 1
            return None
        number: int | None = None
        if kv.key in self.wanted:
            value = anyvalue_to_str(kv.value)
            if len(value) > self.max_value_length:
                value = value[: self.max_value_length + 1]
            number = self._number((kv.key, value))
        elif kv.key in self.marked:
            number = self._number((kv.key, ""))
        if len(raw) > self.max_entry_bytes:
            return number  # too large to keep (see __init__)
        if len(self.entries) >= self.max_entries:
            self.entries.clear()  # the numbers stay: signatures keep their meaning
        self.entries[raw] = number
        return number

    def _number(self, pair: tuple[str, str]) -> int:
        number = self._numbers.get(pair)
        if number is None:
            number = self._numbers[pair] = self._next
            self._pairs[number] = pair
            self._next += 1
        return number

    def texts(self, attributes: Iterable[bytes], keys: frozenset[str]) -> dict[str, str]:
        """The values of `keys` among a span's attributes, decoded afresh (for the
        marked keys, whose values the cache does not hold)."""
        found: dict[str, str] = {}
        for raw in attributes:
            try:
                kv = common_pb2.KeyValue.FromString(raw)
            except Exception:
                continue  # counted when the span was aggregated
            if kv.key in keys:
                found[kv.key] = anyvalue_to_str(kv.value)
        return found


# Serialized Status -> code. The loop in SpanStream reads it directly and calls
# status_code_of only on a miss (a Status with a description, mostly).
STATUS_BY_BYTES: dict[bytes, int] = {b"": 0}
# A Status of a code alone is 2 bytes; longer ones carry a description, which
# varies (and may be megabytes): only the short ones are kept, 64 at most.
MAX_STATUS_CACHED_BYTES = 16


def status_code_of(raw: bytes) -> int:
    """Status.code from a serialized Status (0 UNSET, 1 OK, 2 ERROR)."""
    try:
        return STATUS_BY_BYTES[raw]
    except KeyError:
        pass
    try:
        code = int(trace_pb2.Status.FromString(raw).code)
    except Exception:
        code = 0
    if not 0 <= code <= 2:
        code = 0  # unknown codes render as UNSET; keying them apart would duplicate series
    # Only messages without a description are worth keeping: those with one vary.
    if len(raw) <= MAX_STATUS_CACHED_BYTES and len(STATUS_BY_BYTES) < 64:
        STATUS_BY_BYTES[raw] = code
    return code


def resource_attributes(resource: Any) -> dict[str, common_pb2.AnyValue]:
    return {kv.key: kv.value for kv in resource.attributes}
