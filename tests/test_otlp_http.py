"""OTLP/HTTP receiver and span metrics, driven by the real OpenTelemetry SDK exporter."""

from __future__ import annotations

import gzip
import json
import time
import zlib

import pytest
from google.protobuf import json_format
from google.rpc import status_pb2
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from helpers.otlp import JSON, PROTOBUF, request, sdk_span, sdk_tracer, to_otlp_json
from helpers.sidecar import SidecarProcess, StartSidecar, http_post, sample_value
from helpers.spanmetrics import buckets, calls, wait_for_calls

BUCKETS = ["0.002", "0.004", "0.006", "0.008", "0.01", "0.05", "0.1", "0.2", "0.4", "0.8",
           "1.0", "1.4", "2.0", "5.0", "10.0", "15.0", "+Inf"]  # fmt: skip


@pytest.fixture(scope="module")
def sidecar(start_module_sidecar: StartSidecar) -> SidecarProcess:
    s = start_module_sidecar(
        {
            "receiver": {"http": {"max_body_bytes": "1MiB"}},
            "host": {"enabled": False},
            # Counters are read right after each request: no cached exposition.
            "server": {"metrics_cache_ttl": 0},
        }
    )
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready")
    return s


def traces_url(s: SidecarProcess) -> str:
    return s.otlp_http_url + "/v1/traces"


def test_sdk_http_exporter_counts_and_buckets_exactly(sidecar: SidecarProcess) -> None:
    durations = {
        0.001: "0.002",
        0.003: "0.004",
        0.03: "0.05",
        0.1: "0.1",
        0.3: "0.4",
        1.2: "1.4",
        20.0: "+Inf",
    }
    exporter = OTLPSpanExporter(endpoint=traces_url(sidecar))
    with sdk_tracer(exporter, "svc-http-exact") as tracer:
        for seconds in durations:
            sdk_span(
                tracer,
                "ccxt.fetch_ticker",
                seconds,
                {"exchange.id": "binance", "ccxt.method": "fetch_ticker"},
            )
        for _ in range(3):
            sdk_span(
                tracer,
                "ccxt.create_order",
                0.05,
                {"exchange.id": "kraken", "ccxt.method": "create_order"},
                error="InsufficientFunds",
            )
        sdk_span(
            tracer,
            "strategy.step",
            0.005,
            kind=__import__("opentelemetry.trace", fromlist=["SpanKind"]).SpanKind.INTERNAL,
        )
    families = wait_for_calls(sidecar, "svc-http-exact", 11)
    assert (
        calls(
            families,
            "svc-http-exact",
            span_name="ccxt.fetch_ticker",
            span_kind="SPAN_KIND_CLIENT",
            status_code="STATUS_CODE_UNSET",
            exchange="binance",
            method="fetch_ticker",
            error_type="",
        )
        == 7
    )
    assert (
        calls(
            families,
            "svc-http-exact",
            span_name="ccxt.create_order",
            status_code="STATUS_CODE_ERROR",
            exchange="kraken",
            method="create_order",
            error_type="InsufficientFunds",
        )
        == 3
    )
    assert (
        calls(
            families,
            "svc-http-exact",
            span_name="strategy.step",
            span_kind="SPAN_KIND_INTERNAL",
            exchange="",
            method="",
            error_type="",
        )
        == 1
    )
    # Bucket placement: cumulative counts per le, each duration in its own bucket.
    got = buckets(families, "svc-http-exact", "ccxt.fetch_ticker")
    expected = {
        le: float(sum(1 for b in durations.values() if BUCKETS.index(b) <= BUCKETS.index(le)))
        for le in BUCKETS
    }
    assert got == expected
    duration = families["traces_span_metrics_duration_seconds"]
    total = [
        s.value
        for s in duration.samples
        if s.name.endswith("_sum")
        and s.labels["service_name"] == "svc-http-exact"
        and s.labels["span_name"] == "ccxt.fetch_ticker"
    ]
    assert total == [pytest.approx(sum(durations))]


def test_gzip_compressed_export(sidecar: SidecarProcess) -> None:
    exporter = OTLPSpanExporter(endpoint=traces_url(sidecar), compression=Compression.Gzip)
    with sdk_tracer(exporter, "svc-http-gzip") as tracer:
        for _ in range(5):
            sdk_span(
                tracer,
                "ccxt.fetch_balance",
                0.2,
                {"exchange.id": "binance", "ccxt.method": "fetch_balance"},
            )
    families = wait_for_calls(sidecar, "svc-http-gzip", 5)
    assert calls(families, "svc-http-gzip", method="fetch_balance") == 5


def test_exemplars_in_openmetrics(sidecar: SidecarProcess) -> None:
    req = request(
        "svc-exemplar",
        [
            {
                "name": "ccxt.fetch_ticker",
                "seconds": 0.3,
                "trace_id": bytes.fromhex("5b8efff798038103d269b633813fc60c"),
                "span_id": bytes.fromhex("eee19b7ec3c1b174"),
                "attributes": {"exchange.id": "binance", "ccxt.method": "fetch_ticker"},
            }
        ],
    )
    assert http_post(traces_url(sidecar), req.SerializeToString(), PROTOBUF).status == 200
    wait_for_calls(sidecar, "svc-exemplar", 1)
    families = sidecar.families(openmetrics=True)
    bucket = [
        s
        for s in families["traces_span_metrics_duration_seconds"].samples
        if s.labels.get("service_name") == "svc-exemplar" and s.labels.get("le") == "0.4"
    ]
    assert len(bucket) == 1 and bucket[0].exemplar is not None
    assert bucket[0].exemplar.labels == {
        "trace_id": "5b8efff798038103d269b633813fc60c",
        "span_id": "eee19b7ec3c1b174",
    }
    assert bucket[0].exemplar.value == pytest.approx(0.3)
    counter = [
        s
        for s in families["traces_span_metrics_calls"].samples
        if s.labels.get("service_name") == "svc-exemplar"
    ]
    assert (
        counter[0].exemplar is not None
        and counter[0].exemplar.labels["trace_id"] == "5b8efff798038103d269b633813fc60c"
    )
    # The text format carries no exemplars.
    assert "# {" not in sidecar.metrics_text()


SPEC_JSON = {
    # The shape of opentelemetry-proto's examples/trace.json: hex ids (here upper
    # case, as there), lowerCamelCase fields, integer enums, and fields this
    # version of the protocol does not know, which must be ignored.
    "resourceSpans": [
        {
            "resource": {
                "attributes": [{"key": "service.name", "value": {"stringValue": "svc-json"}}]
            },
            "futureResourceField": {"x": 1},
            "scopeSpans": [
                {
                    "scope": {"name": "my.library", "version": "1.0.0"},
                    "spans": [
                        {
                            "traceId": "5B8EFFF798038103D269B633813FC60C",
                            "spanId": "EEE19B7EC3C1B174",
                            "parentSpanId": "EEE19B7EC3C1B173",
                            "name": "ccxt.fetch_order_book",
                            "startTimeUnixNano": "1544712660000000000",
                            "endTimeUnixNano": 1544712660250000000,
                            "kind": 3,
                            "attributes": [
                                {"key": "exchange.id", "value": {"stringValue": "okx"}},
                                {
                                    "key": "ccxt.method",
                                    "value": {"stringValue": "fetch_order_book"},
                                },
                                {"key": "http.response.status_code", "value": {"intValue": "200"}},
                            ],
                            "status": {"code": 2, "message": "boom"},
                            "unknownSpanField": [1, 2, 3],
                        }
                    ],
                }
            ],
        }
    ]
}


def test_json_is_counted_exactly_like_protobuf(sidecar: SidecarProcess) -> None:
    response = http_post(traces_url(sidecar), json.dumps(SPEC_JSON).encode(), JSON)
    assert response.status == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert json.loads(response.body) == {}
    families = wait_for_calls(sidecar, "svc-json", 1)
    labels = dict(
        span_name="ccxt.fetch_order_book",
        span_kind="SPAN_KIND_CLIENT",
        status_code="STATUS_CODE_ERROR",
        exchange="okx",
        method="fetch_order_book",
        error_type="",
    )
    assert calls(families, "svc-json", **labels) == 1
    after_json = buckets(families, "svc-json", "ccxt.fetch_order_book")
    # The same request in protobuf: every count exactly doubles.
    as_proto = dict(SPEC_JSON)
    clean = json.loads(
        json.dumps(as_proto)
        .replace('"futureResourceField": {"x": 1}, ', "")
        .replace(', "unknownSpanField": [1, 2, 3]', "")
    )
    for span in clean["resourceSpans"][0]["scopeSpans"][0]["spans"]:
        for key in ("traceId", "spanId", "parentSpanId"):
            span[key] = __import__("base64").b64encode(bytes.fromhex(span[key])).decode()
    message = json_format.ParseDict(clean, ExportTraceServiceRequest())
    assert http_post(traces_url(sidecar), message.SerializeToString(), PROTOBUF).status == 200
    families = wait_for_calls(sidecar, "svc-json", 2)
    assert calls(families, "svc-json", **labels) == 2
    assert buckets(families, "svc-json", "ccxt.fetch_order_book") == {
        k: 2 * v for k, v in after_json.items()
    }
    assert after_json["0.4"] == 1 and after_json["0.2"] == 0


def test_partial_success_for_invalid_spans(sidecar: SidecarProcess) -> None:
    req = request(
        "svc-partial",
        [
            {"name": "ok.span", "seconds": 0.01},
            {"name": "bad.trace", "trace_id": b"\x01" * 8},
            {"name": "zero.span", "span_id": bytes(8)},
            {"name": "ok.span", "seconds": 0.01},
        ],
    )
    for content_type, body, decode in (
        (PROTOBUF, req.SerializeToString(), ExportTraceServiceResponse.FromString),
        (JSON, to_otlp_json(req), lambda b: json_format.Parse(b, ExportTraceServiceResponse())),
    ):
        response = http_post(traces_url(sidecar), body, content_type)
        assert response.status == 200
        assert response.headers["content-type"] == content_type["Content-Type"]
        parsed = decode(response.body)
        assert parsed.partial_success.rejected_spans == 2
        assert "trace_id must be 16 bytes" in parsed.partial_success.error_message
    families = wait_for_calls(sidecar, "svc-partial", 4)
    assert calls(families, "svc-partial", span_name="ok.span") == 4
    assert calls(families, "svc-partial", span_name="bad.trace") == 0
    assert (
        sample_value(
            families["tickscope_receiver_rejected_spans"],
            receiver="otlp_http",
            reason="invalid_span",
        )
        == 4
    )


def rejected_requests(s: SidecarProcess, reason: str) -> float:
    return sample_value(
        s.families()["tickscope_receiver_rejected_requests"], receiver="otlp_http", reason=reason
    )


def assert_status_body(
    body: bytes, content_type: str, code: int, fragment: str
) -> status_pb2.Status:
    status = status_pb2.Status()
    if content_type == "application/json":
        json_format.Parse(body, status)
    else:
        status.ParseFromString(body)
    assert status.code == code, status
    assert fragment in status.message, status.message
    return status


@pytest.mark.parametrize(
    ("body", "headers", "http_status", "reason", "fragment", "code"),
    [
        (b"\xff\xff\xff garbage", PROTOBUF, 400, "malformed", "invalid OTLP protobuf", 3),
        (b'{"resourceSpans": [', JSON, 400, "malformed", "invalid JSON", 3),
        (
            b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
            JSON,
            400,
            "malformed",
            "not a hex string",
            3,
        ),
        (b'{"resourceSpans": "nope"}', JSON, 400, "malformed", "invalid OTLP JSON", 3),
        (
            b"hello",
            {"Content-Type": "text/plain"},
            415,
            "unsupported_media_type",
            "unsupported Content-Type 'text/plain'",
            3,
        ),
        (
            b"hello",
            {**PROTOBUF, "Content-Encoding": "br"},
            415,
            "unsupported_encoding",
            "unsupported Content-Encoding 'br'",
            3,
        ),
        (b"x" * (1024 * 1024 + 1), PROTOBUF, 413, "too_large", "exceeds 1048576 bytes", 8),
        (
            gzip.compress(b"\x0a" * 10)[:-6],
            {**PROTOBUF, "Content-Encoding": "gzip"},
            400,
            "malformed",
            "truncated",
            3,
        ),
        (
            b"\x1f\x8b\x08\x00garbage-after-the-magic",
            {**PROTOBUF, "Content-Encoding": "gzip"},
            400,
            "malformed",
            "invalid gzip",
            3,
        ),
    ],
    ids=[
        "bad-protobuf",
        "bad-json",
        "bad-hex-id",
        "json-wrong-shape",
        "wrong-content-type",
        "unknown-encoding",
        "too-large",
        "truncated-gzip",
        "bad-gzip",
    ],
)
def test_bad_requests(
    sidecar: SidecarProcess,
    body: bytes,
    headers: dict[str, str],
    http_status: int,
    reason: str,
    fragment: str,
    code: int,
) -> None:
    before = rejected_requests(sidecar, reason)
    response = http_post(traces_url(sidecar), body, headers)
    assert response.status == http_status, response.body[:200]
    content_type = response.headers["content-type"]
    assert_status_body(response.body, content_type, code, fragment)
    assert rejected_requests(sidecar, reason) == before + 1
    assert_still_serving(sidecar)


def assert_still_serving(s: SidecarProcess) -> None:
    assert s.get("/healthz").status == 200
    req = request("svc-alive", [{"name": "alive", "seconds": 0.001}])
    families = s.families()
    before = calls(families, "svc-alive")
    assert http_post(traces_url(s), req.SerializeToString(), PROTOBUF).status == 200
    wait_for_calls(s, "svc-alive", before + 1)


def test_gzip_bomb_is_stopped_at_the_limit(sidecar: SidecarProcess) -> None:
    # 1 GiB of zeros, compressed (~1 MiB): inflating it whole would take a GiB.
    compressor = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    chunk = bytes(1 << 20)
    bomb = b"".join(compressor.compress(chunk) for _ in range(1024)) + compressor.flush()
    assert len(bomb) < 2 * 1024 * 1024
    rss_before = __import__("psutil").Process(sidecar.proc.pid).memory_info().rss
    started = time.monotonic()
    response = http_post(traces_url(sidecar), bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert response.status == 413
    assert_status_body(response.body, response.headers["content-type"], 8, "after decompression")
    assert time.monotonic() - started < 5  # stopped part-way: inflating 1 GiB would take far longer
    rss_after = __import__("psutil").Process(sidecar.proc.pid).memory_info().rss
    assert rss_after - rss_before < 64 * 1024 * 1024
    assert_still_serving(sidecar)


def test_unknown_path_and_method(sidecar: SidecarProcess) -> None:
    assert http_post(sidecar.otlp_http_url + "/v1/logs", b"", PROTOBUF).status == 404
    from helpers.sidecar import http_get

    assert http_get(traces_url(sidecar)).status == 405


def test_status_page_shows_spans_and_series(start_sidecar: StartSidecar) -> None:
    # A sidecar of its own: the module's is shared, and its counts depend on test order.
    sidecar = start_sidecar({"host": {"enabled": False}, "server": {"metrics_cache_ttl": 0}})
    body = request("svc-status", [{"name": "op"}] * 3).SerializeToString()
    assert http_post(traces_url(sidecar), body, PROTOBUF).status == 200
    wait_for_calls(sidecar, "svc-status", 3)
    status = sidecar.get("/?format=json").json()
    spans = status["spans"]
    assert spans["processed"] == 3
    # 3 spans over the rate window (at least a second): more than none, at most 3/s.
    assert 0 < spans["per_second"] <= 3.0
    assert spans["series"] == 1 and spans["series_limit"] == 2000
    assert spans["queued"] == 0 and spans["queue_capacity"] == 32768
    assert "forward" not in spans
    assert spans["receivers"] == sidecar.receivers
    page = sidecar.get("/").text
    assert "spans: " in page and "span metrics series" in page
    ready = {c["name"]: c["ready"] for c in sidecar.get("/readyz").json()["checks"]}
    assert ready["receiver:otlp_http"] and ready["receiver:otlp_grpc"]
