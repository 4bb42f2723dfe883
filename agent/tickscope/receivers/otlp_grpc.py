"""OTLP/gRPC receiver: the TraceService Export RPC (grpc.aio), same semantics as HTTP.

The method is registered as a generic handler that receives the raw message
bytes, so that the bytes can be queued (and forwarded) as they came, and decoded
here with opentelemetry-proto's classes. gzip-compressed messages are inflated
by gRPC itself, which enforces receiver.grpc.max_message_bytes on the inflated
size and answers RESOURCE_EXHAUSTED past it (such calls never reach this code,
so they are not in tickscope's counters).

Status codes (OTLP specification, "OTLP/gRPC"): INVALID_ARGUMENT for a message
that does not decode; RESOURCE_EXHAUSTED with a RetryInfo when the pipeline is
full (the OTel SDKs retry it then); UNAVAILABLE while shutting down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.duration_pb2 import Duration as DurationProto
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tickscope.core.errors import ListenError
from tickscope.core.health import Health
from tickscope.core.spanview import decode_traces
from tickscope.receivers.config import OTLPGRPCConfig
from tickscope.receivers.intake import Intake
from tickscope.receivers.metrics_intake import MetricsIntake

__all__ = ["TRACE_EXPORT_METHOD", "OTLPGRPCReceiver"]

log = logging.getLogger("tickscope.receiver.otlp_grpc")

RECEIVER = "otlp_grpc"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
TRACE_EXPORT_METHOD = f"/{TRACE_SERVICE}/Export"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
METRICS_EXPORT_METHOD = f"/{METRICS_SERVICE}/Export"
RETRY_AFTER_SECONDS = 1


def _serialize(response: ExportTraceServiceResponse) -> bytes:
    return response.SerializeToString()


def _serialize_metrics(response: ExportMetricsServiceResponse) -> bytes:
    return response.SerializeToString()


class OTLPGRPCReceiver:
    name = f"receiver:{RECEIVER}"

    def __init__(
        self,
        config: OTLPGRPCConfig,
        intake: Intake,
        health: Health,
        metrics_intake: MetricsIntake | None = None,
    ) -> None:
        self.config = config
        self.metrics_intake = metrics_intake
        self.intake = intake
        self.health = health
        self.port: int | None = None
        self._server: grpc.aio.Server | None = None
        self._closing = False
        self._metrics = intake.metrics
        self._duration = intake.metrics.duration.labels(RECEIVER)
        health.require(f"receiver:{RECEIVER}", "not listening yet")

    async def start(self) -> None:
        limit = int(self.config.max_message_bytes)
        config = self.config

        def ms(seconds: float) -> int:
            return max(1, round(seconds * 1000))

        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", limit),
                ("grpc.max_send_message_length", 4 * 1024 * 1024),
                # One process per pod: never share the port with a second sidecar.
                ("grpc.so_reuseport", 0),
                # gRPC core's defaults keep a silent connection 120 s and an idle or
                # half-sent one forever; these bound each (issue 11, defect 16).
                ("grpc.server_handshake_timeout_ms", ms(config.handshake_timeout)),
                ("grpc.max_connection_idle_ms", ms(config.idle_timeout)),
                ("grpc.max_connection_age_ms", ms(config.max_connection_age)),
                ("grpc.max_connection_age_grace_ms", ms(config.max_connection_age_grace)),
            ]
        )
        handler = grpc.method_handlers_generic_handler(
            TRACE_SERVICE,
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    self._export, request_deserializer=None, response_serializer=_serialize
                )
            },
        )
        handlers = [handler]
        if self.metrics_intake is not None:
            handlers.append(
                grpc.method_handlers_generic_handler(
                    METRICS_SERVICE,
                    {
                        "Export": grpc.unary_unary_rpc_method_handler(
                            self._export_metrics,
                            request_deserializer=None,
                            response_serializer=_serialize_metrics,
                        )
                    },
                )
            )
        server.add_generic_rpc_handlers(tuple(handlers))
        address = f"{self.config.bind}:{self.config.port}"
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as exc:
            port = 0
            reason: Exception = exc
        else:
            reason = OSError(98, "address already in use (another process listens there)")
        if port == 0:
            await server.stop(None)
            raise ListenError(
                "OTLP/gRPC",
                "receiver.grpc.port",
                self.config.bind,
                self.config.port,
                reason if isinstance(reason, OSError) else OSError(0, str(reason)),
            )
        await server.start()
        self._server = server
        self.port = port
        self.health.set_ready(f"receiver:{RECEIVER}")
        log.info(
            "OTLP/gRPC receiver listening",
            extra={"address": self.config.bind, "port": port, "service": TRACE_SERVICE},
        )

    async def stop(self, grace: float = 5.0) -> None:
        self._closing = True
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None

    async def _abort(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        code: grpc.StatusCode,
        reason: str,
        message: str,
        retry_after: int | None = None,
        count: bool = True,
    ) -> NoReturn:
        if count:
            self._metrics.rejected_requests.labels(RECEIVER, reason).inc()
        metadata: tuple[tuple[str, str | bytes], ...] = ()
        if retry_after is not None:
            status = status_pb2.Status(code=code.value[0], message=message)
            status.details.add().Pack(
                error_details_pb2.RetryInfo(retry_delay=DurationProto(seconds=retry_after))
            )
            metadata = (("grpc-status-details-bin", status.SerializeToString()),)
        await context.abort(code, message, trailing_metadata=metadata)
        raise AssertionError("unreachable: abort raises")  # pragma: no cover

    async def _handle(
        self,
        raw: bytes,
        context: grpc.aio.ServicerContext[Any, Any],
        decode: Callable[[bytes], Any],
        accept: Callable[[Any], Awaitable[Any]],
    ) -> Any:
        """What both Export methods share: shutdown, decoding, errors, timing."""
        started = time.perf_counter()
        try:
            if self._closing:
                await self._abort(
                    context,
                    grpc.StatusCode.UNAVAILABLE,
                    "shutting_down",
                    "shutting down",
                    RETRY_AFTER_SECONDS,
                )
            try:
                request = decode(raw)
            except DecodeError as exc:
                await self._abort(
                    context,
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "malformed",
                    f"invalid OTLP protobuf: {exc}",
                )
            return await accept(request)
        except grpc.aio.AbortError:
            raise
        except Exception:
            log.exception("OTLP/gRPC request failed")
            await self._abort(context, grpc.StatusCode.INTERNAL, "internal", "internal error")
        finally:
            self._duration.observe(time.perf_counter() - started)

    async def _export(
        self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportTraceServiceResponse:
        if not self._closing and self.intake.pipeline.is_full():
            await self._busy(context)  # before decoding: backpressure should be cheap

        async def accept(request: Any) -> ExportTraceServiceResponse:
            outcome = self.intake.accept(request, raw, RECEIVER)
            if outcome.refused:
                await self._busy(context, counted=True)
            return outcome.response()

        response: ExportTraceServiceResponse = await self._handle(
            raw, context, decode_traces, accept
        )
        return response

    async def _export_metrics(
        self, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> ExportMetricsServiceResponse:
        intake = self.metrics_intake
        assert intake is not None

        async def accept(request: ExportMetricsServiceRequest) -> ExportMetricsServiceResponse:
            # In pieces, yielding between them: see MetricsIntake.accept_async.
            return (await intake.accept_async(request, RECEIVER)).response()

        response: ExportMetricsServiceResponse = await self._handle(
            raw, context, ExportMetricsServiceRequest.FromString, accept
        )
        return response

    async def _busy(
        self, context: grpc.aio.ServicerContext[Any, Any], counted: bool = False
    ) -> NoReturn:
        message = (
            f"pipeline queue full ({self.intake.pipeline.capacity} spans); retry after "
            f"{RETRY_AFTER_SECONDS}s"
        )
        await self._abort(
            context,
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "queue_full",
            message,
            RETRY_AFTER_SECONDS,
            count=not counted,  # the intake counted a refused request already
        )
