"""An OTLP/HTTP span exporter that writes ExportTraceServiceRequest bytes itself.

The stock exporter (opentelemetry.exporter.otlp.proto.http.trace_exporter) builds
a protobuf message object per span, attribute, value, event and link, then
serialises the tree: most of the engine's CPU per exported span. This one writes
the protobuf wire format directly from the finished spans: each attribute key's
field bytes are cached (keys recur), values are written inline, the whole field
of a recurring (key, string value) pair (exchange, method, symbol, host) is
cached too, in a bounded dict that pauses itself when values do not recur (order
ids), and the resource and scopes are encoded once. The output is byte-for-byte
what the stock encoder serialises (fields in field-number order, the same
defaults left out, the same grouping by resource and scope, by equality, in
first-seen order); tests/test_shim_fastexport.py decodes both and compares every
field, and compares the bytes.

bench/bench_exporter.py measures the alternative the issue names, upb messages
built in bulk (one Span constructor per span from cached KeyValue messages): about
1.5x this encoder's CPU with recurring values and 3x with unique ones, so this
one writes bytes.

Posting is the stock exporter's own: FastSpanExporter wraps a stock
OTLPSpanExporter (built as usual, so endpoint, headers, compression, timeout,
TLS, credential provider, retries with backoff and Retry-After, max_request_size
and the exporter's self-metrics are the stock ones) and hands its HTTP client the
bytes, in a copy of the stock export() with only the encoding swapped.

What it does not encode itself goes to the stock encoder, so the result is the
stock exporter's in every case:
- a span with an attribute (of the span, an event or a link) that is not a str,
  bool, int within int64, float, bytes, None in an array, or a tuple/list of
  those (e.g. a dict, a bytearray, an int past int64, numpy.int64, a string with
  lone surrogates), or a span that is not an SDK span: that span is encoded by
  the stock span encoder, its bytes spliced in, the rest of the batch here;
- a resource or scope it cannot encode, or any other error: the whole batch goes
  to the stock encoder (which, if it cannot either, fails the export as the
  stock exporter does).
`fallback_spans` / `fallback_batches` count them. Links with attributes, events,
trace state, dropped counts (also with limits of 0), remote parents, every span
kind and str/int/float subclasses (StrEnum, IntEnum) are encoded here.

`wrap(exporter)` returns a FastSpanExporter for a stock OTLP/HTTP span exporter
with the internals it was written against (opentelemetry-exporter-otlp-proto-http
1.45: the shared OTLP HTTP client; checked when wrapped), and any other exporter
(gRPC, console, a subclass, a release with other internals) unchanged.
TICKSCOPE_SHIM_FAST_EXPORT=false turns it off. export.batch_processor wraps, so
configure() and the distro's configurator both use it (the distro only where the
SDK lets it choose the span processor, as for the export gate).
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.sdk.util import BoundedList

from tickscope.shim import settings

__all__ = ["FAST_EXPORT_ENV", "FastSpanExporter", "SpanEncoder", "wrap"]

FAST_EXPORT_ENV = "TICKSCOPE_SHIM_FAST_EXPORT"

log = logging.getLogger("tickscope.shim")

_pack_q = struct.Struct("<Q").pack
_pack_d = struct.Struct("<d").pack
_pack_i = struct.Struct("<I").pack
_ONE = [bytes((i,)) for i in range(128)]
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_U64 = (1 << 64) - 1
# SpanFlags: CONTEXT_HAS_IS_REMOTE (0x100), | CONTEXT_IS_REMOTE (0x200) when remote.
_FLAGS_LOCAL = b"\x85\x01" + _pack_i(0x100)
_FLAGS_REMOTE = b"\x85\x01" + _pack_i(0x300)
_LINK_FLAGS_LOCAL = b"\x35" + _pack_i(0x100)
_LINK_FLAGS_REMOTE = b"\x35" + _pack_i(0x300)
_EMPTY_STATUS = b"\x7a\x00"
_CACHE_LIMIT = 4096
_PAUSE_BATCHES = 64


class Unhandled(Exception):
    """A value this encoder leaves to the stock one."""


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _ONE[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field: tag, length, payload."""
    n = len(payload)
    return tag + (_ONE[n] if n < 0x80 else _varint(n)) + payload


def _any_value(value: Any) -> bytes:
    """An AnyValue message's body, as the stock _encode_value makes it."""
    cls = type(value)
    if cls is str:
        return _field(b"\x0a", value.encode())
    if cls is bool:
        return b"\x10\x01" if value else b"\x10\x00"
    if cls is int:
        if value < _INT64_MIN or value > _INT64_MAX:
            raise Unhandled("int out of int64 range")
        return b"\x18" + _varint(value & _U64)
    if cls is float:
        return b"\x21" + _pack_d(value)
    if cls is tuple or cls is list:
        return _field(b"\x2a", b"".join([_field(b"\x0a", _any_value(v)) for v in value]))
    if value is None:
        return b""
    if cls is bytes:
        return _field(b"\x3a", value)
    # Subclasses (StrEnum, IntEnum, numpy.float64), in the stock encoder's order,
    # by the value they hold (the base class's method, not an override).
    if isinstance(value, str):
        return _any_value(str.__str__(value))
    if isinstance(value, int):
        return _any_value(int.__index__(value))
    if isinstance(value, float):
        return _any_value(float.__float__(value))
    raise Unhandled(f"attribute value of type {cls.__name__}")


def _key_value(key: str, value: Any) -> bytes:
    """A KeyValue message's body."""
    if type(key) is not str:
        raise Unhandled("attribute key not a str")
    body = _any_value(value)
    if key:
        return _field(b"\x0a", key.encode()) + _field(b"\x12", body)
    return _field(b"\x12", body)


def _items(attributes: Any) -> Any:
    """The (key, value) pairs; of an SDK BoundedAttributes, from its dict (the
    Mapping mixin's items() costs a Python call per key)."""
    if type(attributes) is BoundedAttributes:
        return attributes._dict.items()
    return attributes.items()


def _attributes(tag: bytes, attributes: Any) -> bytes:
    if not attributes:
        return b""
    return b"".join([_field(tag, _key_value(k, v)) for k, v in _items(attributes)])


def _span_id(value: int) -> bytes:
    return value.to_bytes(8, "big")


class SpanEncoder:
    """Encodes ExportTraceServiceRequest bytes from SDK spans (module doc)."""

    def __init__(self, stock_span: Callable[[ReadableSpan], Any] | None = None) -> None:
        # The stock per-span encoder, for the spans this one leaves to it.
        self._stock_span = stock_span
        # attribute key -> its KeyValue.key field (tag, length, UTF-8).
        self._keys: dict[str, bytes] = {}
        # (key, str value) -> the whole span attribute field, for the values that
        # recur (exchange, method, symbol, host); paused when they do not (_refill).
        self._strings: dict[tuple[str, str], bytes] = {}
        self._hits = 0
        self._paused = 0
        # id(object) -> (object, encoded field): the resource and the scopes.
        self._resources: dict[int, tuple[Any, bytes]] = {}
        self._scopes: dict[int, tuple[Any, bytes]] = {}
        self.fallback_spans = 0

    # -- attributes -------------------------------------------------------------

    def _span_attributes(self, attributes: Any) -> bytes:
        """The span's attribute fields (tag 9). The key's field is cached (keys
        recur); the value is written inline for the common types."""
        out: list[bytes] = []
        append = out.append
        keys = self._keys
        strings: dict[tuple[str, str], bytes] | None = None if self._paused else self._strings
        hits = 0
        for key, value in _items(attributes):
            prefix = keys.get(key)
            if prefix is None:
                if type(key) is not str or not key:
                    append(_field(b"\x4a", _key_value(key, value)))
                    continue
                prefix = _field(b"\x0a", key.encode())
                if len(keys) >= _CACHE_LIMIT:
                    keys.clear()
                keys[key] = prefix
            cls = type(value)
            if cls is str:
                if strings is not None:
                    pair = (key, value)
                    cached = strings.get(pair)
                    if cached is not None:
                        hits += 1
                        append(cached)
                        continue
                encoded = value.encode()
                n = len(encoded)
                if n < 126:
                    body = prefix + b"\x12" + _ONE[n + 2] + b"\x0a" + _ONE[n] + encoded
                else:
                    body = prefix + _field(b"\x12", _field(b"\x0a", encoded))
                n = len(body)
                field = b"\x4a" + (_ONE[n] if n < 0x80 else _varint(n)) + body
                if strings is not None:
                    if len(strings) >= _CACHE_LIMIT:
                        strings = self._refill(hits)
                        hits = 0
                    if strings is not None:
                        strings[pair] = field
                append(field)
                continue
            elif cls is float:
                body = prefix + b"\x12\x09\x21" + _pack_d(value)
            elif cls is int and _INT64_MIN <= value <= _INT64_MAX:
                if 0 <= value < 0x80:
                    body = prefix + b"\x12\x02\x18" + _ONE[value]
                else:
                    varint = _varint(value & _U64)
                    body = prefix + b"\x12" + _ONE[len(varint) + 1] + b"\x18" + varint
            elif cls is bool:
                body = prefix + (b"\x12\x02\x10\x01" if value else b"\x12\x02\x10\x00")
            else:
                body = prefix + _field(b"\x12", _any_value(value))
            n = len(body)
            append(b"\x4a" + (_ONE[n] if n < 0x80 else _varint(n)) + body)
        self._hits += hits
        return b"".join(out)

    def _refill(self, hits: int) -> dict[tuple[str, str], bytes] | None:
        """The string cache is full: start it again, or, when it was hit less
        than once per entry since it was last started (values that do not
        recur: order ids, free text), stop using it for _PAUSE_BATCHES batches."""
        self._strings.clear()
        if self._hits + hits < _CACHE_LIMIT:
            self._paused = _PAUSE_BATCHES
            self._hits = 0
            return None
        self._hits = -hits
        return self._strings

    # -- spans ------------------------------------------------------------------

    def span(self, span: ReadableSpan) -> bytes:
        """One Span message's body."""
        ctx = span._context  # the fields, not the properties (which copy)
        if ctx is None:
            raise Unhandled("span without a context")
        parts = [
            b"\x0a\x10" + ctx.trace_id.to_bytes(16, "big"),
            b"\x12\x08" + ctx.span_id.to_bytes(8, "big"),
        ]
        append = parts.append
        trace_state = ctx.trace_state
        if trace_state:
            joined = ",".join([f"{k}={v}" for k, v in trace_state.items()])
            if joined:
                append(_field(b"\x1a", joined.encode()))
        parent = span._parent
        if parent is not None:
            append(b"\x22\x08" + parent.span_id.to_bytes(8, "big"))
        name = span._name
        if name:
            append(_field(b"\x2a", name.encode()))
        append(_KINDS[span._kind])
        start = span._start_time
        if start:
            append(b"\x39" + _pack_q(start))
        end = span._end_time
        if end:
            append(b"\x41" + _pack_q(end))
        attributes = span._attributes
        if attributes:
            append(self._span_attributes(attributes))
        # Dropped counts also when nothing was kept (a limit of 0).
        if isinstance(attributes, BoundedAttributes) and attributes.dropped:
            append(b"\x50" + _varint(attributes.dropped))
        events = span._events
        if events:
            for event in events:
                body = []
                timestamp = event.timestamp
                if timestamp:
                    body.append(b"\x09" + _pack_q(timestamp))
                if event.name:
                    body.append(_field(b"\x12", event.name.encode()))
                body.append(_attributes(b"\x1a", event.attributes))
                if event.dropped_attributes:
                    body.append(b"\x20" + _varint(event.dropped_attributes))
                append(_field(b"\x5a", b"".join(body)))
        if isinstance(events, BoundedList) and events.dropped:
            append(b"\x60" + _varint(events.dropped))
        links = span._links
        if links:
            for link in links:
                context = link.context
                body = [
                    b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
                    b"\x12\x08" + context.span_id.to_bytes(8, "big"),
                    _attributes(b"\x22", link.attributes),
                ]
                if link.dropped_attributes:
                    body.append(b"\x28" + _varint(link.dropped_attributes))
                body.append(_LINK_FLAGS_REMOTE if context.is_remote else _LINK_FLAGS_LOCAL)
                append(_field(b"\x6a", b"".join(body)))
        if isinstance(links, BoundedList) and links.dropped:
            append(b"\x70" + _varint(links.dropped))
        status = span._status
        code = status.status_code.value
        description = status.description
        if code or description:
            body_s = _field(b"\x12", description.encode()) if description else b""
            if code:
                body_s += b"\x18" + _ONE[code]
            append(_field(b"\x7a", body_s))
        else:
            append(_EMPTY_STATUS)
        append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
        return b"".join(parts)

    def _span_field(self, span: ReadableSpan) -> bytes:
        """The ScopeSpans.spans field (tag 2) for one span, from the stock encoder
        when this one leaves it."""
        if type(span) in _SPAN_TYPES:
            try:
                return _field(b"\x12", self.span(span))
            except Exception:  # left to the stock encoder
                if self._stock_span is None:
                    raise
        elif self._stock_span is None:
            raise Unhandled(f"span of type {type(span).__name__}")
        self.fallback_spans += 1
        assert self._stock_span is not None
        return _field(b"\x12", self._stock_span(span).SerializePartialToString())

    # -- resources and scopes -------------------------------------------------------

    def _resource(self, resource: Any) -> bytes:
        """ResourceSpans.resource (tag 1) and nothing else; schema_url goes last."""
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource:
            return cached[1]
        encoded = _field(b"\x0a", _attributes(b"\x0a", resource.attributes))
        if len(self._resources) >= 64:
            self._resources.clear()
        self._resources[id(resource)] = (resource, encoded)
        return encoded

    def _scope(self, scope: Any) -> bytes:
        """ScopeSpans.scope (tag 1)."""
        cached = self._scopes.get(id(scope))
        if cached is not None and cached[0] is scope:
            return cached[1]
        if scope is None:
            encoded = b"\x0a\x00"
        else:
            body = b""
            if scope.name:
                body += _field(b"\x0a", scope.name.encode())
            if scope.version:
                body += _field(b"\x12", scope.version.encode())
            body += _attributes(b"\x1a", scope.attributes)
            encoded = _field(b"\x0a", body)
        if len(self._scopes) >= 256:
            self._scopes.clear()
        self._scopes[id(scope)] = (scope, encoded)
        return encoded

    # -- the request --------------------------------------------------------------

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        """ExportTraceServiceRequest bytes, equal to the stock encoder's
        encode_spans(spans).SerializePartialToString()."""
        # Grouped as the stock encoder groups them (dicts keyed by resource, then
        # scope, by equality, in first-seen order), but looked up by identity: the
        # SDK's Resource hashes a JSON dump of its attributes.
        if self._paused:
            self._paused -= 1
        groups: list[tuple[Any, list[tuple[Any, list[bytes]]], dict[int, list[bytes]]]] = []
        by_resource: dict[
            int, tuple[Any, list[tuple[Any, list[bytes]]], dict[int, list[bytes]]]
        ] = {}
        last_key: tuple[int, int] | None = None
        last_list: list[bytes] = []
        span_field = self._span_field
        for span in spans:
            resource = span.resource
            scope = span.instrumentation_scope or None
            key = (id(resource), id(scope))
            if key != last_key:
                group = by_resource.get(key[0])
                if group is None:
                    for candidate in groups:
                        if candidate[0] == resource:
                            group = candidate
                            break
                    else:
                        group = (resource, [], {})
                        groups.append(group)
                    by_resource[key[0]] = group
                scopes, by_scope = group[1], group[2]
                found = by_scope.get(key[1])
                if found is None:
                    for known_scope, known_list in scopes:
                        if known_scope == scope:
                            found = known_list
                            break
                    else:
                        found = []
                        scopes.append((scope, found))
                    by_scope[key[1]] = found
                last_key, last_list = key, found
            last_list.append(span_field(span))
        out = []
        for resource, scopes, _ in groups:
            body = [self._resource(resource)]
            for scope, encoded_spans in scopes:
                scope_body = self._scope(scope) + b"".join(encoded_spans)
                schema_url = scope.schema_url if scope is not None else None
                if schema_url:
                    scope_body += _field(b"\x1a", schema_url.encode())
                body.append(_field(b"\x12", scope_body))
            if resource.schema_url:
                body.append(_field(b"\x1a", resource.schema_url.encode()))
            out.append(_field(b"\x0a", b"".join(body)))
        return b"".join(out)


def _kinds() -> dict[Any, bytes]:
    from opentelemetry.trace import SpanKind

    # OTLP's SpanKind is the SDK's plus one (0 is UNSPECIFIED).
    return {kind: b"\x30" + _ONE[kind.value + 1] for kind in SpanKind}


_KINDS = _kinds()


def _span_types() -> frozenset[type]:
    """The SDK's span classes, whose fields this reads (the processors hand the
    exporter ReadableSpans; Span and its tracer-made subclass have the same fields)."""
    from opentelemetry.sdk import trace as sdk_trace

    return frozenset({ReadableSpan, sdk_trace.Span, getattr(sdk_trace, "_Span", sdk_trace.Span)})


_SPAN_TYPES = _span_types()


def _stock_parts() -> tuple[Any, Any, Any, Any] | None:
    """What the fast path uses of the stock exporter: its encoders, its request
    size check and error; None when this release has other internals."""
    try:
        from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import (
            _encode_span,
        )
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
        from opentelemetry.exporter.otlp.proto.http._common import (
            RequestPayloadTooLargeError,
            _is_request_too_large,
        )
    except ImportError:
        return None
    return _encode_span, encode_spans, _is_request_too_large, RequestPayloadTooLargeError


class FastSpanExporter(SpanExporter):
    """The stock OTLP/HTTP span exporter with this module's encoder (module doc)."""

    def __init__(self, stock: Any) -> None:
        parts = _stock_parts()
        if parts is None:
            raise RuntimeError("this opentelemetry-exporter-otlp-proto-http has other internals")
        encode_span, self._encode_spans, self._too_large, self._too_large_error = parts
        self._stock = stock
        self.encoder = SpanEncoder(encode_span)
        self.fallback_batches = 0

    @property
    def fallback_spans(self) -> int:
        return self.encoder.fallback_spans

    def encode(self, spans: Sequence[ReadableSpan]) -> bytes:
        try:
            return self.encoder.encode(spans)
        except Exception as error:  # the stock encoder decides
            log.debug("fast OTLP encoding left to the stock encoder: %r", error)
            self.fallback_batches += 1
            return bytes(self._encode_spans(spans).SerializePartialToString())

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        # The stock OTLPSpanExporter.export, with the encoding swapped.
        stock = self._stock
        if stock._shutdown:
            stock_log.warning("Exporter already shutdown, ignoring batch")
            return SpanExportResult.FAILURE
        with stock._metrics.export_operation(len(spans)) as result:
            try:
                serialized_data = self.encode(spans)
            except Exception as error:  # as the stock exporter does
                stock_log.error("Failed to encode span batch: %s", error)
                result.error = error
                return SpanExportResult.FAILURE
            max_size = stock._max_request_size
            if self._too_large(serialized_data, max_size):
                stock_log.warning(
                    "Dropping span batch: serialized size %d bytes exceeds max_request_size %d bytes.",
                    len(serialized_data),
                    max_size,
                )
                result.error = self._too_large_error(
                    f"Serialized span request size {len(serialized_data)} "
                    f"bytes exceeds max_request_size {max_size} bytes."
                )
                return SpanExportResult.FAILURE
            export_result = stock._client.export(serialized_data)
            if not export_result.success:
                result.error = export_result.error
                result.error_attrs = (
                    {"http.response.status_code": export_result.status_code}
                    if export_result.status_code is not None
                    else None
                )
                return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self._stock.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._stock.force_flush(timeout_millis))

    def __getattr__(self, name: str) -> Any:
        # _endpoint, _client, _compression ...: the stock exporter's.
        if name == "_stock":
            raise AttributeError(name)
        return getattr(self._stock, name)


stock_log = logging.getLogger("opentelemetry.exporter.otlp.proto.http.trace_exporter")


def _compatible(exporter: Any) -> bool:
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        return False
    if type(exporter) is not OTLPSpanExporter or _stock_parts() is None:
        return False
    client = getattr(exporter, "_client", None)
    metrics = getattr(exporter, "_metrics", None)
    return (
        callable(getattr(client, "export", None))
        and callable(getattr(metrics, "export_operation", None))
        and isinstance(getattr(exporter, "_max_request_size", None), int)
        and isinstance(getattr(exporter, "_shutdown", None), bool)
    )


def wrap(exporter: SpanExporter) -> SpanExporter:
    """A FastSpanExporter around `exporter` when it is the stock OTLP/HTTP span
    exporter this was written against and fast export is on; else `exporter`."""
    if not settings.env_flag(FAST_EXPORT_ENV, True) or not _compatible(exporter):
        return exporter
    return FastSpanExporter(exporter)
