"""Forwarding over OTLP/gRPC: one channel to the upstream, the spec's retryable
codes, and RetryInfo from the status details.

Imported only when `forward.protocol` is grpc (grpcio is the sidecar's largest
import)."""

from __future__ import annotations

from typing import Any

import grpc
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tickscope.exporters.forward.config import ForwardConfig
from tickscope.exporters.forward.sender import OK, SendResult

__all__ = ["GrpcSender"]

TRACE_EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
# The OTLP specification's retryable gRPC codes.
# (RESOURCE_EXHAUSTED only with a RetryInfo: without one it means "too large", and
# sending the same bytes again cannot help.)
RETRYABLE_GRPC = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    }
)


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay in a status's details, if the upstream sent one."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin" and isinstance(value, bytes):
            try:
                status = status_pb2.Status.FromString(value)
            except Exception:
                return None
            for detail in status.details:
                info = error_details_pb2.RetryInfo()
                if detail.Unpack(info):
                    return float(info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


class GrpcSender:
    def __init__(self, config: ForwardConfig) -> None:
        self.config = config
        target, tls = config.grpc_target()
        options = [("grpc.max_send_message_length", 64 * 1024 * 1024)]
        self._channel = (
            grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=options)
            if tls
            else grpc.aio.insecure_channel(target, options=options)
        )
        # Requests are already serialized: the batch goes out as it was received.
        self._call: Any = self._channel.unary_unary(
            TRACE_EXPORT_METHOD,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())
        self._compression = grpc.Compression.Gzip if config.compression == "gzip" else None

    async def send(self, body: bytes) -> SendResult:
        try:
            response = await self._call(
                body,
                timeout=self.config.timeout,
                metadata=self._metadata,
                compression=self._compression,
            )
        except grpc.aio.AioRpcError as error:
            message = f"gRPC {error.code().name}: {error.details()}"
            delay = retry_delay(error)
            if error.code() in RETRYABLE_GRPC or (
                error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and delay is not None
            ):
                return SendResult(True, delay, message)
            return SendResult(False, None, message)
        rejected = response.partial_success.rejected_spans
        if rejected:
            return SendResult(
                False, None, response.partial_success.error_message or "partial success", rejected
            )
        return OK

    async def close(self) -> None:
        await self._channel.close()
