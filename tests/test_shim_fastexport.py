"""tickscope.shim.fastexport: the hand-written OTLP encoder against the stock one,
its fallbacks, the stock exporter's posting semantics, and a real sidecar."""

from __future__ import annotations

import enum
import gzip
import http.server
import logging
import math
import random
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState

from helpers.sidecar import StartSidecar, sample_value
from helpers.spanmetrics import calls, wait_for_calls
from tickscope.shim import export, fastexport

BASE = 1_700_000_000_000_000_000


class Side(enum.StrEnum):
    BUY = "buy"


class Weight(enum.IntEnum):
    HEAVY = 20


EVERY_VALUE: dict[str, Any] = {
    "s": "binance",
    "s.empty": "",
    "s.unicode": "BTC/USDT ✓ 比特币",
    "s.long": "x" * 300,
    "b.true": True,
    "b.false": False,
    "i.zero": 0,
    "i.small": 7,
    "i.neg": -1,
    "i.max": 2**63 - 1,
    "i.min": -(2**63),
    "i.200": 200,
    "f": 120.5,
    "f.zero": 0.0,
    "f.negzero": -0.0,
    "f.inf": math.inf,
    "f.ninf": -math.inf,
    "f.nan": math.nan,
    "f.tiny": 5e-324,
    "bytes": b"\x00\x01\xff",
    "bytes.empty": b"",
    "a.str": ("a", "", "ccc"),
    "a.bool": (True, False),
    "a.int": (1, -2, 2**40),
    "a.float": (1.5, -0.0),
    "a.none": ("a", None, "b"),
    "a.empty": (),
    "a.long": tuple(range(200)),
    "enum.str": Side.BUY,
    "enum.int": Weight.HEAVY,
    "a.enum": (Side.BUY, Side.BUY),
}


def finished(provider: TracerProvider) -> InMemorySpanExporter:
    memory = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory


def remote(trace_id: int, span_id: int, state: TraceState | None = None) -> SpanContext:
    return SpanContext(
        trace_id, span_id, is_remote=True, trace_flags=TraceFlags(1), trace_state=state
    )


def span_table() -> list[ReadableSpan]:
    """Spans from real SDK providers: every value type, events, links, status, kinds,
    two resources (and an equal copy of one), scopes with versions, schema URLs and
    attributes (and an equal copy), dropped counts, trace state, remote parents."""
    resource_a = Resource.create({"service.name": "svc-a", "n": 1, "tags": ("x", "y")})
    provider_a = TracerProvider(
        resource=resource_a,
        span_limits=SpanLimits(max_span_attributes=40, max_events=3, max_links=2),
    )
    memory_a = finished(provider_a)
    provider_b = TracerProvider(
        resource=Resource(
            {"service.name": "svc-b"}, schema_url="https://opentelemetry.io/schemas/1.30.0"
        )
    )
    memory_b = finished(provider_b)
    # A third provider whose resource equals resource_a but is another object.
    provider_a2 = TracerProvider(resource=Resource(dict(resource_a.attributes)))
    memory_a2 = finished(provider_a2)
    plain = provider_a.get_tracer("tickscope.tests")
    versioned = provider_a.get_tracer(
        "tickscope.ccxt", "1.2.3", schema_url="https://x/1", attributes={"scope.k": "v", "n": 2}
    )
    # get_tracer again: an equal scope, another object.
    versioned_again = provider_a.get_tracer(
        "tickscope.ccxt", "1.2.3", schema_url="https://x/1", attributes={"scope.k": "v", "n": 2}
    )
    other = provider_b.get_tracer("other", "")

    state = TraceState([("vendor", "v1"), ("tickscope", "ab-1")])
    parent_remote = remote(0x1234, 0x99, state)
    for kind in SpanKind:
        plain.start_span(f"kind.{kind.name}", kind=kind, start_time=BASE).end(end_time=BASE + 5)
    span = plain.start_span("every.value", attributes=EVERY_VALUE, start_time=BASE)
    span.end(end_time=BASE + 1_000_000)
    span = versioned.start_span(
        "with.events",
        start_time=BASE,
        links=[
            Link(remote(0xABC, 0xDEF), {"link.k": "v", "link.i": 3}),
            Link(SpanContext(0x1, 0x2, is_remote=False)),
            Link(remote(0x3, 0x4, state), {"a": (1.0, 2.0)}),
        ],
    )
    span.add_event("no.attributes", timestamp=BASE + 1)
    span.add_event("attributes", {"e.s": "v", "e.b": True, "e.a": ("p", "q")}, timestamp=BASE + 2)
    span.add_event("", {"e.f": 0.25}, timestamp=BASE + 3)
    span.add_event("dropped.one", timestamp=BASE + 4)  # past max_events: dropped_events_count 1
    span.set_status(Status(StatusCode.ERROR, "InsufficientFunds: balance"))
    span.end(end_time=BASE + 9)
    crowded = plain.start_span("dropped.attributes", attributes={f"k{i}": i for i in range(45)})
    crowded.end()
    ok = versioned_again.start_span("status.ok", kind=SpanKind.CLIENT)
    ok.set_status(Status(StatusCode.OK))
    ok.end()
    from opentelemetry import trace as trace_api

    child_ctx = trace_api.set_span_in_context(trace_api.NonRecordingSpan(parent_remote))
    plain.start_span("remote.parent", context=child_ctx, kind=SpanKind.SERVER).end()
    with plain.start_as_current_span("local.parent"):
        plain.start_span("local.child", attributes={"s": "binance", "i.200": 200}).end()
    other.start_span("other.resource", attributes={"s": "kraken"}).end()
    provider_a2.get_tracer("tickscope.tests").start_span("equal.resource").end()
    plain.start_span("after.other", attributes={"s": "binance"}).end()
    # Limits of 0 (everything dropped, counts kept) and event/link attribute limits.
    provider_z = TracerProvider(
        resource=resource_a,
        span_limits=SpanLimits(
            max_span_attributes=0,
            max_events=0,
            max_links=0,
            max_event_attributes=1,
            max_link_attributes=1,
        ),
    )
    memory_z = finished(provider_z)
    zero = provider_z.get_tracer("tickscope.tests")
    span = zero.start_span(
        "limits.zero", attributes={"a": 1, "b": 2}, links=[Link(remote(0x5, 0x6), {"x": 1})]
    )
    span.add_event("gone", {"a": 1})
    span.end()
    provider_y = TracerProvider(
        resource=resource_a,
        span_limits=SpanLimits(max_event_attributes=1, max_link_attributes=1),
    )
    memory_y = finished(provider_y)
    span = provider_y.get_tracer("tickscope.tests").start_span(
        "limits.one", links=[Link(remote(0x5, 0x6), {"x": 1, "y": 2, "z": 3})]
    )
    span.add_event("kept", {"a": 1, "b": 2})
    span.end()
    spans: list[ReadableSpan] = []
    a, b, a2 = (list(m.get_finished_spans()) for m in (memory_a, memory_b, memory_a2))
    # Interleaved, so the grouping's first-seen order matters.
    spans = a[:4] + b + a[4:8] + a2 + a[8:]
    spans += list(memory_z.get_finished_spans()) + list(memory_y.get_finished_spans())
    # Hand-made ReadableSpans: no resource scope, no parent, no end time, unset status.
    spans.append(
        ReadableSpan(
            name="bare",
            context=SpanContext(0xFFFF, 0xEEEE, is_remote=False),
            start_time=BASE,
            resource=resource_a,
        )
    )
    spans.append(
        ReadableSpan(
            name="made.by.hand",
            context=SpanContext(2**128 - 1, 2**64 - 1, is_remote=False, trace_state=state),
            parent=SpanContext(2**128 - 1, 1, is_remote=False),
            resource=Resource({}, schema_url=""),
            attributes={"h": "v"},
            events=[Event("e", {"x": 1}, timestamp=BASE)],
            kind=SpanKind.PRODUCER,
            status=Status(StatusCode.UNSET),
            start_time=BASE,
            end_time=BASE + 1,
            instrumentation_scope=InstrumentationScope("hand", None, None, {"q": 1.5}),
        )
    )
    for provider in (provider_a, provider_b, provider_a2, provider_z, provider_y):
        provider.shutdown()
    return spans


def decoded(data: bytes) -> dict[str, Any]:
    message = ExportTraceServiceRequest.FromString(data)
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def stock_bytes(spans: list[ReadableSpan]) -> bytes:
    return bytes(encode_spans(spans).SerializePartialToString())


def fast_encoder() -> fastexport.SpanEncoder:
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span

    return fastexport.SpanEncoder(_encode_span)


def test_the_table_encodes_byte_for_byte_as_the_stock_encoder() -> None:
    spans = span_table()
    assert len(spans) == 19
    stock = stock_bytes(spans)
    encoder = fast_encoder()
    fast = encoder.encode(spans)
    assert encoder.fallback_spans == 0
    # Decoded and compared field by field (the JSON mapping: NaN is "NaN" there,
    # where message equality would find NaN != NaN) ...
    assert decoded(fast) == decoded(stock)
    # ... and the bytes.
    assert fast == stock
    # Again with the caches warm.
    assert encoder.encode(spans) == stock
    request = decoded(fast)
    # The table covers what it says: 3 resource groups (equal resources merged),
    # the versioned scopes merged, dropped counts, links, events, trace state.
    assert [len(r["scope_spans"]) for r in request["resource_spans"]] == [3, 1, 1]
    first = request["resource_spans"][0]
    assert [s["scope"].get("name") for s in first["scope_spans"]] == [
        "tickscope.tests",
        "tickscope.ccxt",
        None,  # the hand-made span without a scope: an empty InstrumentationScope
    ]
    assert request["resource_spans"][2]["scope_spans"][0]["scope"] == {
        "name": "hand",
        "attributes": [{"key": "q", "value": {"double_value": 1.5}}],
    }
    assert len(first["scope_spans"][1]["spans"]) == 2
    by_name = {
        s["name"]: s
        for r in request["resource_spans"]
        for ss in r["scope_spans"]
        for s in ss["spans"]
    }
    assert by_name["with.events"]["dropped_events_count"] == 1
    assert len(by_name["with.events"]["links"]) == 2
    assert by_name["with.events"]["dropped_links_count"] == 1
    assert by_name["dropped.attributes"]["dropped_attributes_count"] == 5
    assert by_name["remote.parent"]["trace_state"] == "vendor=v1,tickscope=ab-1"
    assert by_name["remote.parent"]["flags"] == 0x300
    assert by_name["local.child"]["flags"] == 0x100
    assert by_name["with.events"]["status"] == {
        "code": "STATUS_CODE_ERROR",
        "message": "InsufficientFunds: balance",
    }
    assert len(by_name["every.value"]["attributes"]) == len(EVERY_VALUE)
    zero = by_name["limits.zero"]
    assert (zero["dropped_attributes_count"], zero["dropped_events_count"]) == (2, 1)
    assert zero["dropped_links_count"] == 1
    assert "attributes" not in zero and "events" not in zero and "links" not in zero
    one = by_name["limits.one"]
    assert one["events"][0]["dropped_attributes_count"] == 1
    assert one["links"][0]["dropped_attributes_count"] == 2


@pytest.mark.parametrize("size", [1, 2, 127, 128, 1000])
def test_batch_sizes_and_lengths_across_varint_boundaries(size: int) -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    memory = finished(provider)
    tracer = provider.get_tracer("t")
    for i in range(size):
        # Names and values of growing length: every length prefix from 1 to 3 bytes.
        tracer.start_span("n" * (i % 300), attributes={"v": "x" * i, "i": i, "f": i / 3}).end()
    spans = list(memory.get_finished_spans())
    assert fast_encoder().encode(spans) == stock_bytes(spans)
    assert fast_encoder().encode([]) == stock_bytes([]) == b""


def test_the_string_cache_pauses_for_values_that_do_not_recur_and_comes_back() -> None:
    provider = TracerProvider(resource=Resource.create({"service.name": "svc"}))
    memory = finished(provider)
    tracer = provider.get_tracer("t")
    encoder = fast_encoder()
    paused = []
    for batch in range(12):
        memory.clear()
        for i in range(512):
            # Unique order ids: the cache fills without a hit, then pauses.
            tracer.start_span("o", attributes={"order.id": f"{batch}-{i}"}).end()
        spans = list(memory.get_finished_spans())
        assert encoder.encode(spans) == stock_bytes(spans)
        paused.append(encoder._paused > 0)
    # 4096 entries, no hit: full at the 4097th span (batch 8), paused from there.
    assert paused == [False] * 8 + [True] * 4
    encoder._paused = 1
    memory.clear()
    for _ in range(300):
        tracer.start_span("o", attributes={"exchange.id": "binance"}).end()
    spans = list(memory.get_finished_spans())
    for _ in range(3):
        assert encoder.encode(spans) == stock_bytes(spans)
    assert not encoder._paused
    assert list(encoder._strings) == [("exchange.id", "binance")]


class _OddSpan(ReadableSpan):
    @property
    def name(self) -> str:
        return "renamed"


def test_what_it_does_not_encode_is_left_to_the_stock_encoder(
    caplog: pytest.LogCaptureFixture,
) -> None:
    resource = Resource.create({"service.name": "svc"})
    ctx = SpanContext(0x10, 0x20, is_remote=False)
    fine = ReadableSpan("fine", ctx, resource=resource, attributes={"s": "v"}, start_time=BASE)
    odd = [
        # A dict value (the SDK's span attributes never hold one; a hand-made span can).
        ReadableSpan("dict", ctx, resource=resource, attributes={"m": {"a": 1, "b": "c"}}),
        # An int past int64: the stock encoder logs it and drops the attribute.
        ReadableSpan("bigint", ctx, resource=resource, attributes={"i": 2**64, "s": "kept"}),
        ReadableSpan("bytearray", ctx, resource=resource, attributes={"ba": bytearray(b"ab")}),
        ReadableSpan("surrogate", ctx, resource=resource, attributes={"s": "\ud800"}),
        ReadableSpan(
            "link.dict",
            ctx,
            resource=resource,
            links=[Link(ctx, {"m": {"k": "v"}})],
        ),
        _OddSpan("subclass", ctx, resource=resource),
    ]
    for span in odd:
        spans = [fine, span, fine]
        encoder = fast_encoder()
        with caplog.at_level(logging.ERROR):
            stock = stock_bytes(spans)
            assert encoder.encode(spans) == stock, span.name
        assert encoder.fallback_spans == 1, span.name
    # A resource it cannot encode: the exporter hands the whole batch over.
    bad_resource = Resource({"m": 2**70})
    spans = [ReadableSpan("r", ctx, resource=bad_resource, start_time=BASE)]
    exporter = fastexport.FastSpanExporter(
        OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    )
    with caplog.at_level(logging.ERROR):
        assert exporter.encode(spans) == stock_bytes(spans)
    assert exporter.fallback_batches == 1
    assert exporter.fallback_spans == 0
    exporter.shutdown()


def test_exporter_fails_as_the_stock_exporter_does() -> None:
    # A surrogate in a span name: neither encoder can, the export fails, no request.
    ctx = SpanContext(0x10, 0x20, is_remote=False)
    spans = [ReadableSpan("\ud800", ctx, resource=Resource({}))]
    exporter = fastexport.FastSpanExporter(
        OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces")
    )
    assert exporter.export(spans) is SpanExportResult.FAILURE
    exporter.shutdown()
    assert exporter.export([]) is SpanExportResult.FAILURE  # shut down


def test_wrap_takes_only_the_stock_http_exporter(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (
        OTLPSpanExporter as GRPCSpanExporter,
    )

    stock = OTLPSpanExporter(endpoint="http://127.0.0.1:9/v1/traces", timeout=3)
    wrapped = fastexport.wrap(stock)
    assert isinstance(wrapped, fastexport.FastSpanExporter)
    assert wrapped._endpoint == "http://127.0.0.1:9/v1/traces"  # the stock one's
    grpc = GRPCSpanExporter(endpoint="127.0.0.1:9", insecure=True)
    assert fastexport.wrap(grpc) is grpc

    class Custom(OTLPSpanExporter):
        pass

    custom = Custom(endpoint="http://127.0.0.1:9/v1/traces")
    assert fastexport.wrap(custom) is custom
    memory = InMemorySpanExporter()
    assert fastexport.wrap(memory) is memory
    monkeypatch.setenv(fastexport.FAST_EXPORT_ENV, "false")
    assert fastexport.wrap(stock) is stock
    monkeypatch.delenv(fastexport.FAST_EXPORT_ENV)
    # The span processor configure() and the distro build wraps it.
    processor = export.batch_processor(stock, export_gate=export.ExportGate(), meter_provider=None)
    try:
        gated = processor._batch_processor._exporter
        assert isinstance(gated, export.GatedExporter)
        assert isinstance(gated._exporter, fastexport.FastSpanExporter)
    finally:
        processor.shutdown()
    grpc.shutdown()  # type: ignore[no-untyped-call]
    custom.shutdown()


class _Capture(http.server.BaseHTTPRequestHandler):
    requests: list[tuple[dict[str, str], bytes]]
    answers: list[int]

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
        status = type(self).answers.pop(0) if type(self).answers else 200
        self.send_response(status)
        if status != 200:
            self.send_header("Retry-After", "0")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def capture() -> Iterator[tuple[str, type[_Capture]]]:
    handler = type("Handler", (_Capture,), {"requests": [], "answers": []})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces", handler
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_posts_as_the_stock_exporter_does(
    capture: tuple[str, type[_Capture]], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, handler = capture
    monkeypatch.setenv(
        "OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=desk-7,authorization=Bearer t"
    )
    spans = span_table()
    sent: list[list[tuple[dict[str, str], bytes]]] = []
    for make in (lambda e: e, fastexport.FastSpanExporter):
        handler.requests.clear()
        # A 503 first (Retry-After: 0): the stock client retries, then 200.
        handler.answers[:] = [503]
        exporter = make(OTLPSpanExporter(endpoint=url, compression=Compression.Gzip, timeout=5))
        assert exporter.export(spans) is SpanExportResult.SUCCESS
        exporter.shutdown()
        sent.append(list(handler.requests))
    stock, fast = sent
    assert len(stock) == len(fast) == 2
    for (stock_headers, stock_body), (fast_headers, fast_body) in zip(stock, fast, strict=True):
        assert fast_headers == stock_headers
        assert fast_headers["content-encoding"] == "gzip"
        assert fast_headers["x-tenant"] == "desk-7"
        assert fast_headers["content-type"] == "application/x-protobuf"
        assert gzip.decompress(fast_body) == gzip.decompress(stock_body) == stock_bytes(spans)


def test_a_sidecar_counts_exactly_what_it_sent(start_sidecar: StartSidecar) -> None:
    sidecar = start_sidecar({"host": {"enabled": False}, "server": {"metrics_cache_ttl": 0}})
    sidecar.wait_until(lambda: sidecar.get("/readyz").status == 200, what="ready")
    stock = OTLPSpanExporter(endpoint=f"{sidecar.otlp_http_url}/v1/traces")
    exporter = fastexport.wrap(stock)
    assert isinstance(exporter, fastexport.FastSpanExporter)
    provider = TracerProvider(resource=Resource.create({"service.name": "svc-fast"}))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=100))
    tracer = provider.get_tracer("tickscope.tests")
    for i in range(250):
        span = tracer.start_span(
            "ccxt.fetch_ticker",
            kind=SpanKind.CLIENT,
            attributes={"exchange.id": "binance", "ccxt.method": "fetch_ticker", "n": i},
            start_time=BASE,
        )
        span.end(end_time=BASE + 3_000_000)
    for _ in range(7):
        span = tracer.start_span(
            "ccxt.create_order",
            kind=SpanKind.CLIENT,
            attributes={"exchange.id": "kraken", "ccxt.method": "create_order"},
        )
        span.set_attribute("error.type", "InsufficientFunds")
        span.set_status(Status(StatusCode.ERROR, "no balance"))
        span.end()
    assert provider.force_flush(10_000)
    provider.shutdown()
    families = wait_for_calls(sidecar, "svc-fast", 257)
    assert calls(families, "svc-fast", span_name="ccxt.fetch_ticker", exchange="binance") == 250
    assert (
        calls(
            families,
            "svc-fast",
            span_name="ccxt.create_order",
            status_code="STATUS_CODE_ERROR",
            error_type="InsufficientFunds",
        )
        == 7
    )
    accepted = families["tickscope_receiver_accepted_spans"]
    assert sample_value(accepted, receiver="otlp_http") == 257
    received = families["tickscope_receiver_received_spans"]
    assert sample_value(received, receiver="otlp_http") == 257
    rejected = families.get("tickscope_receiver_rejected_spans")
    assert rejected is None or sum(s.value for s in rejected.samples) == 0
    assert exporter.fallback_spans == 0 and exporter.fallback_batches == 0


def _random_value(rng: random.Random, depth: int = 0) -> Any:
    if rng.random() < 0.01:
        # Left to the stock encoder: a dict, an int past int64, a bytearray.
        return rng.choice([{"k": "v", "n": 1}, 2**64 + 5, bytearray(b"xy")])
    kind = rng.randrange(9)
    if kind == 0:
        return "".join(rng.choice("ab✓比\x00 é") for _ in range(rng.choice([0, 1, 5, 130, 300])))
    if kind == 1:
        return rng.random() < 0.5
    if kind == 2:
        return rng.choice([0, 1, 127, 128, -1, 2**63 - 1, -(2**63), rng.randrange(-(2**40), 2**40)])
    if kind == 3:
        return rng.choice([0.0, -0.0, math.inf, -math.inf, 1e308, rng.uniform(-1e6, 1e6)])
    if kind == 4:
        return bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 200])))
    if kind in (5, 6, 7) and depth == 0:
        element = rng.choice([0, 1, 2, 3])
        return tuple(
            None if rng.random() < 0.1 else _random_value_of(rng, element)
            for _ in range(rng.choice([0, 1, 4, 40]))
        )
    return Side.BUY if rng.random() < 0.5 else Weight.HEAVY


def _random_value_of(rng: random.Random, element: int) -> Any:
    return [
        lambda: rng.choice(["", "a", "ccxt"]),
        lambda: rng.random() < 0.5,
        lambda: rng.randrange(-(2**63), 2**63),
        lambda: rng.uniform(-10, 10),
    ][element]()


def _random_attributes(rng: random.Random, keys: list[str]) -> dict[str, Any]:
    return {rng.choice(keys): _random_value(rng) for _ in range(rng.randrange(0, 12))}


def test_random_spans_encode_as_the_stock_encoder_does(caplog: pytest.LogCaptureFixture) -> None:
    """Hand-made ReadableSpans with random attributes, events, links, parents,
    states and resources (a fixed seed): the bytes are the stock encoder's."""
    rng = random.Random(15)
    keys = ["exchange.id", "ccxt.method", "k", "", "ключ", "x" * 200]
    resources = [Resource({"service.name": "a"}), Resource({"service.name": "b", "n": 2})]
    scopes = [
        None,
        InstrumentationScope("s", "1", "https://s", {"q": 1}),
        InstrumentationScope("t"),
    ]
    encoder = fast_encoder()
    total = 0
    for _ in range(150):
        spans = []
        for _ in range(rng.randrange(1, 25)):
            ctx = SpanContext(
                rng.randrange(2**128),
                rng.randrange(2**64),
                is_remote=False,
                trace_state=TraceState([("v", "1")]) if rng.random() < 0.2 else None,
            )
            parent = None
            if rng.random() < 0.5:
                parent = SpanContext(
                    ctx.trace_id, rng.randrange(2**64), is_remote=rng.random() < 0.5
                )
            spans.append(
                ReadableSpan(
                    name=rng.choice(["", "ccxt.fetch_ticker", "é" * 100]),
                    context=ctx,
                    parent=parent,
                    resource=rng.choice(resources),
                    attributes=_random_attributes(rng, keys),
                    events=[
                        Event(
                            rng.choice(["", "e"]), _random_attributes(rng, keys), timestamp=BASE + i
                        )
                        for i in range(rng.choice([0, 0, 1, 3]))
                    ],
                    links=[
                        Link(
                            SpanContext(
                                rng.randrange(2**128), rng.randrange(2**64), rng.random() < 0.5
                            ),
                            _random_attributes(rng, keys),
                        )
                        for _ in range(rng.choice([0, 0, 1, 2]))
                    ],
                    kind=rng.choice(list(SpanKind)),
                    status=rng.choice(
                        [
                            Status(StatusCode.UNSET),
                            Status(StatusCode.OK),
                            Status(StatusCode.ERROR, "e"),
                        ]
                    ),
                    start_time=rng.choice([None, 0, BASE]),
                    end_time=rng.choice([None, BASE + 10]),
                    instrumentation_scope=rng.choice(scopes),
                )
            )
        with caplog.at_level(logging.CRITICAL):
            assert encoder.encode(spans) == stock_bytes(spans)
        total += len(spans)
    # Some spans held what only the stock encoder takes; most did not.
    assert 0 < encoder.fallback_spans < total / 4
