"""OTLP/gRPC receiver, driven by the real OpenTelemetry SDK exporter and raw grpc calls."""

from __future__ import annotations

import gzip

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from helpers.otlp import many, request, sdk_span, sdk_tracer
from helpers.sidecar import SidecarProcess, StartSidecar, sample_value
from helpers.spanmetrics import calls, wait_for_calls

METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


@pytest.fixture(scope="module")
def sidecar(start_module_sidecar: StartSidecar) -> SidecarProcess:
    s = start_module_sidecar(
        {
            "receiver": {"grpc": {"max_message_bytes": "1MiB"}},
            "host": {"enabled": False},
            # Counters are read right after each request: no cached exposition.
            "server": {"metrics_cache_ttl": 0},
        }
    )
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready")
    return s


def export(
    target: str, body: bytes, compression: grpc.Compression | None = None
) -> ExportTraceServiceResponse:
    with grpc.insecure_channel(
        target,
        options=[("grpc.max_send_message_length", -1)],  # the server decides
    ) as channel:
        call = channel.unary_unary(
            METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        return call(body, timeout=30, compression=compression)


def rejected_requests(s: SidecarProcess, reason: str) -> float:
    return sample_value(
        s.families()["tickscope_receiver_rejected_requests"], receiver="otlp_grpc", reason=reason
    )


def test_sdk_grpc_exporter_counts_exactly(sidecar: SidecarProcess) -> None:
    exporter = OTLPSpanExporter(endpoint=sidecar.otlp_grpc_target, insecure=True)
    with sdk_tracer(exporter, "svc-grpc") as tracer:
        for seconds in (0.001, 0.07, 3.0):
            sdk_span(
                tracer,
                "ccxt.fetch_ticker",
                seconds,
                {"exchange.id": "binance", "ccxt.method": "fetch_ticker"},
            )
        sdk_span(
            tracer,
            "ccxt.cancel_order",
            0.2,
            {"exchange.id": "binance", "ccxt.method": "cancel_order"},
            error="OrderNotFound",
        )
    families = wait_for_calls(sidecar, "svc-grpc", 4)
    assert (
        calls(
            families,
            "svc-grpc",
            span_name="ccxt.fetch_ticker",
            status_code="STATUS_CODE_UNSET",
            method="fetch_ticker",
        )
        == 3
    )
    assert (
        calls(
            families,
            "svc-grpc",
            span_name="ccxt.cancel_order",
            status_code="STATUS_CODE_ERROR",
            error_type="OrderNotFound",
        )
        == 1
    )
    assert sample_value(families["tickscope_receiver_accepted_spans"], receiver="otlp_grpc") >= 4


def test_sdk_grpc_exporter_with_gzip(sidecar: SidecarProcess) -> None:
    exporter = OTLPSpanExporter(
        endpoint=sidecar.otlp_grpc_target, insecure=True, compression=grpc.Compression.Gzip
    )
    with sdk_tracer(exporter, "svc-grpc-gzip") as tracer:
        for _ in range(3):
            sdk_span(
                tracer,
                "ccxt.fetch_trades",
                0.01,
                {"exchange.id": "bybit", "ccxt.method": "fetch_trades"},
            )
    families = wait_for_calls(sidecar, "svc-grpc-gzip", 3)
    assert calls(families, "svc-grpc-gzip", exchange="bybit") == 3


def test_partial_success(sidecar: SidecarProcess) -> None:
    req = request("svc-grpc-partial", [{"name": "ok"}, {"name": "bad", "trace_id": bytes(16)}])
    response = export(sidecar.otlp_grpc_target, req.SerializeToString())
    assert response.partial_success.rejected_spans == 1
    assert "not all zeros" in response.partial_success.error_message


def test_invalid_argument_for_undecodable_data(sidecar: SidecarProcess) -> None:
    before = rejected_requests(sidecar, "malformed")
    with pytest.raises(grpc.RpcError) as info:
        export(sidecar.otlp_grpc_target, b"\xff\xff\xffnot protobuf")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid OTLP protobuf" in info.value.details()
    assert rejected_requests(sidecar, "malformed") == before + 1
    assert sidecar.get("/healthz").status == 200


def test_max_message_size_is_enforced(sidecar: SidecarProcess) -> None:
    too_big = request(
        "svc-grpc-big", many("big", 4000, attributes={"pad": "x" * 300})
    ).SerializeToString()
    assert len(too_big) > 1024 * 1024
    before = rejected_requests(sidecar, "too_large")
    with pytest.raises(grpc.RpcError) as info:
        export(sidecar.otlp_grpc_target, too_big)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details() == (
        f"message of {len(too_big)} bytes exceeds 1048576 bytes (receiver.grpc.max_message_bytes)"
    )
    assert rejected_requests(sidecar, "too_large") == before + 1


def test_gzip_bomb_is_refused(sidecar: SidecarProcess) -> None:
    # A valid request padded with an attribute of 200 MiB of zeros: tiny once
    # gzipped, over the limit once inflated: inflated no further than the limit.
    bomb = request(
        "svc-grpc-bomb", [{"name": "bomb", "attributes": {"pad": "\0" * (200 << 20)}}]
    ).SerializeToString()
    assert len(gzip.compress(bomb, 1)) < 2 << 20
    before = rejected_requests(sidecar, "too_large")
    with pytest.raises(grpc.RpcError) as info:
        export(sidecar.otlp_grpc_target, bomb, compression=grpc.Compression.Gzip)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert info.value.details() == (
        "inflated message of 1048577+ bytes exceeds 1048576 bytes (receiver.grpc.max_message_bytes)"
    )
    assert rejected_requests(sidecar, "too_large") == before + 1
    assert sidecar.get("/healthz").status == 200
    families = sidecar.families()
    assert calls(families, "svc-grpc-bomb") == 0
