"""The engine side of export: CPU per exported span, the stock OpenTelemetry
OTLP/HTTP exporter against tickscope.shim.fastexport, in one run.

1. Encoding alone (time.process_time, batches of 512 finished SDK spans shaped as
   the shim's ccxt spans): the stock encoder (encode_spans + SerializePartialToString),
   the shim's hand-written wire format, and, for the record, upb messages built
   in bulk (one Span per span from cached KeyValue messages: the best the message
   objects do), each checked to produce the stock bytes.
2. The whole export (encode, POST, the response) to a real sidecar on 127.0.0.1:
   the engine process's CPU per span, both exporters in alternating rounds, and the
   sidecar's accepted-span counter checked against what was sent.

Two span shapes: "shim" (recurring exchange/method/symbol values, a rate-limit
figure that moves) and "unique" (every string and int value new in every batch of
the run: the fast encoder's attribute cache never hits, and is cleared as it fills).
Goal (issue 15): the fast exporter's CPU per exported span at most 1/3 of the stock one's.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import free_port, percentile, sidecar

BATCH = 512
ROUNDS = 40


def make_spans(shape: str, offset: int = 0) -> list[Any]:
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import SpanKind, Status, StatusCode

    memory = InMemorySpanExporter()
    provider = TracerProvider(
        resource=Resource.create(
            {
                "service.name": "trading-engine",
                "host.name": "bench",
                "process.pid": 4242,
                "telemetry.distro.name": "tickscope-shim",
            }
        )
    )
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tickscope.shim.ccxt", "0.1.0")
    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT", "XRP/USDT"]
    for n in range(BATCH):
        i = n + offset
        if shape == "shim":
            attributes: dict[str, Any] = {
                "exchange.id": "binance",
                "ccxt.method": "fetch_ticker" if i % 8 else "create_order",
                "trading.symbol": symbols[i % 4],
                "server.address": "api.binance.com",
                "http.request.method": "GET" if i % 8 else "POST",
                "http.response.status_code": 200,
                "trading.ratelimit.used": float(100 + i % 300),
                "trading.ratelimit.limit": 6000.0,
            }
        else:
            attributes = {
                "exchange.id": f"exchange-{i}",
                "ccxt.method": f"method_{i}",
                "trading.symbol": f"SYM{i}/USDT",
                "server.address": f"api{i}.example.com",
                "http.request.method": f"M{i}",
                "http.response.status_code": 200 + i,
                "trading.ratelimit.used": float(i),
                "trading.ratelimit.limit": 6000.0 + i,
            }
        span = tracer.start_span(
            f"ccxt.{attributes['ccxt.method']}", kind=SpanKind.CLIENT, attributes=attributes
        )
        if i % 50 == 0:
            span.set_attribute("error.type", "RateLimitExceeded")
            span.set_status(Status(StatusCode.ERROR, "429"))
        span.end()
    provider.shutdown()
    return list(memory.get_finished_spans())


def upb_bulk_encoder() -> Callable[[Sequence[Any]], bytes]:
    """ExportTraceServiceRequest built from upb messages with as few Python objects
    as the message API allows: cached KeyValue messages for recurring pairs, one
    Span constructor call per span, one resource and scope."""
    from opentelemetry.exporter.otlp.proto.common._internal import (
        _encode_instrumentation_scope,
        _encode_key_value,
        _encode_resource,
    )
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

    cache: dict[tuple[str, type, Any], Any] = {}
    empty_status = Status()

    def encode(spans: Sequence[Any]) -> bytes:
        request = ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.CopyFrom(_encode_resource(spans[0].resource))
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.CopyFrom(_encode_instrumentation_scope(spans[0].instrumentation_scope))
        out = scope_spans.spans
        for span in spans:
            kvs = []
            for k, v in span._attributes._dict.items():
                key = (k, type(v), v)
                kv = cache.get(key)
                if kv is None:
                    if len(cache) >= 4096:  # bounded, as the fast encoder's
                        cache.clear()
                    kv = cache[key] = _encode_key_value(k, v)
                kvs.append(kv)
            ctx = span._context
            status = span._status
            out.append(
                Span(
                    trace_id=ctx.trace_id.to_bytes(16, "big"),
                    span_id=ctx.span_id.to_bytes(8, "big"),
                    parent_span_id=span._parent.span_id.to_bytes(8, "big")
                    if span._parent
                    else None,
                    name=span._name,
                    kind=span._kind.value + 1,
                    start_time_unix_nano=span._start_time,
                    end_time_unix_nano=span._end_time,
                    attributes=kvs,
                    status=Status(code=status.status_code.value, message=status.description)
                    if status.status_code.value
                    else empty_status,
                    flags=0x100,
                )
            )
        return bytes(request.SerializePartialToString())

    return encode


def batches(shape: str, rounds: int) -> list[list[Any]]:
    """One batch for the shim shape; for the unique shape, one per round."""
    count = 1 if shape == "shim" else rounds + 1
    return [make_spans(shape, k * BATCH) for k in range(count)]


def cpu_per_span(
    fn: Callable[[list[Any]], Any], spans: list[list[Any]], rounds: int
) -> list[float]:
    per_round = []
    for r in range(rounds):
        batch = spans[r % len(spans)]
        started = time.process_time()
        fn(batch)
        per_round.append((time.process_time() - started) / BATCH)
    return per_round


def encoding(shape: str, rounds: int = ROUNDS) -> dict[str, list[float]]:
    from opentelemetry.exporter.otlp.proto.common._internal.trace_encoder import _encode_span
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    from tickscope.shim.fastexport import SpanEncoder

    all_spans = batches(shape, rounds)
    fast = SpanEncoder(_encode_span)
    upb = upb_bulk_encoder()
    for spans in all_spans[:2]:
        expected = bytes(encode_spans(spans).SerializePartialToString())
        assert fast.encode(spans) == expected, "fast encoder output differs from the stock one's"
        assert upb(spans) == expected, "upb bulk output differs from the stock encoder's"
    assert fast.fallback_spans == 0
    encoders: dict[str, Callable[[list[Any]], Any]] = {
        "stock": lambda spans: encode_spans(spans).SerializePartialToString(),
        "fast": fast.encode,
        "upb": upb,
    }
    results: dict[str, list[float]] = {name: [] for name in encoders}
    # Interleaved blocks, so that drift in the machine's speed hits all alike; for
    # the unique shape each encoder meets every batch once (first sight: cold cache).
    for block in range(rounds // 5):
        for name, fn in encoders.items():
            window = all_spans[block * 5 % len(all_spans) :] + all_spans
            results[name] += cpu_per_span(fn, window, 5)
    return results


def accepted(admin_port: int) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith('tickscope_receiver_accepted_spans_total{receiver="otlp_http"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def full_export(shape: str, rounds: int = ROUNDS) -> tuple[dict[str, list[float]], float, int]:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import SpanExportResult

    from tickscope.shim.fastexport import FastSpanExporter

    all_spans = batches(shape, rounds)
    http_port = free_port()
    config = {
        "receiver": {"http": {"port": http_port}, "grpc": {"enabled": False}},
        "host": {"enabled": False},
    }
    with sidecar(config) as (_, admin_port):
        url = f"http://127.0.0.1:{http_port}/v1/traces"
        exporters = {
            "stock": OTLPSpanExporter(endpoint=url),
            "fast": FastSpanExporter(OTLPSpanExporter(endpoint=url)),
        }
        for exporter in exporters.values():  # connections up (the last batch: kept apart)
            assert exporter.export(all_spans[-1]) is SpanExportResult.SUCCESS
        results: dict[str, list[float]] = {name: [] for name in exporters}
        sent = 2 * BATCH
        for block in range(rounds // 5):
            for name, exporter in exporters.items():

                def run(spans: list[Any], e: Any = exporter) -> None:
                    assert e.export(spans) is SpanExportResult.SUCCESS

                window = all_spans[block * 5 % len(all_spans) :] + all_spans
                results[name] += cpu_per_span(run, window, 5)
                sent += 5 * BATCH
        # The sidecar counts exactly what was sent.
        deadline = time.monotonic() + 10
        while accepted(admin_port) < sent and time.monotonic() < deadline:
            time.sleep(0.1)
        got = accepted(admin_port)
        for exporter in exporters.values():
            exporter.shutdown()
    return results, got, sent


def line(label: str, values: list[float]) -> str:
    return (
        f"  {label:<34} median {statistics.median(values) * 1e6:6.2f} µs/span"
        f"   p95 {percentile(values, 95) * 1e6:6.2f}   p99 {percentile(values, 99) * 1e6:6.2f}"
    )


def measure(
    rounds: int = ROUNDS, shapes: Sequence[str] = ("shim", "unique"), echo: bool = False
) -> dict[str, Any]:
    """Both measurements per shape, in one run: medians in µs/span, p95/p99, the
    fast/stock ratios and the sidecar's count (bench/report.py reads this)."""
    summary: dict[str, Any] = {}
    say = print if echo else (lambda *_: None)
    for shape in shapes:
        enc = encoding(shape, rounds)
        say(
            f"encoding only, {shape}-shaped spans, batches of {BATCH}, {rounds} rounds each, engine CPU:"
        )
        say(line("stock encoder (upb messages)", enc["stock"]))
        say(line("upb messages built in bulk", enc["upb"]))
        say(line("tickscope fastexport (wire format)", enc["fast"]))
        stock = statistics.median(enc["stock"])
        ratio_enc = statistics.median(enc["fast"]) / stock
        say(
            f"  fast/stock {ratio_enc:.3f}   upb bulk/stock {statistics.median(enc['upb']) / stock:.3f}"
        )
        full, got, sent = full_export(shape, rounds)
        say(f"whole export (encode + POST to a sidecar on 127.0.0.1), {shape}-shaped, engine CPU:")
        say(line("stock OTLPSpanExporter", full["stock"]))
        say(line("tickscope FastSpanExporter", full["fast"]))
        ratio = statistics.median(full["fast"]) / statistics.median(full["stock"])
        say(f"  fast/stock {ratio:.3f} (goal <= 0.333)   sidecar accepted {got:.0f} of {sent} sent")
        summary[shape] = {
            "encode_us": {k: _stats(v) for k, v in enc.items()},
            "export_us": {k: _stats(v) for k, v in full.items()},
            "encode_ratio": ratio_enc,
            "export_ratio": ratio,
            "accepted": got,
            "sent": sent,
        }
    return summary


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "median": statistics.median(values) * 1e6,
        "p95": percentile(values, 95) * 1e6,
        "p99": percentile(values, 99) * 1e6,
    }


def main() -> int:
    summary = measure(echo=True)
    print("json " + json.dumps(summary))
    ok = all(s["export_ratio"] <= 1 / 3 and s["accepted"] == s["sent"] for s in summary.values())
    print("targets met" if ok else "TARGETS MISSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
