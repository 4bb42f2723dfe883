"""A tiny OTLP receiver for tests: records every export it gets, answers as told.

HTTP runs aiohttp on its own event loop in a thread; gRPC uses grpc's threaded
server. Both bind 127.0.0.1 and are stopped by the test that started them.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass, field

import grpc
from aiohttp import web
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)


@dataclass
class Answer:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    delay: float = 0.0  # seconds to wait before answering (a hung upstream)


@dataclass
class Received:
    at: float
    body: bytes
    headers: dict[str, str]


class HTTPSink:
    def __init__(self, port: int = 0, answer: Callable[[int], Answer] | None = None) -> None:
        self.port = port
        self.answer = answer or (lambda _: Answer())
        self.received: list[Received] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append(Received(time.monotonic(), body, dict(request.headers)))
        answer = self.answer(len(self.received))
        if answer.delay:
            await asyncio.sleep(answer.delay)
        return web.Response(
            status=answer.status,
            body=answer.body,
            headers={"Content-Type": "application/x-protobuf", **answer.headers},
        )

    def start(self) -> HTTPSink:
        ready = threading.Event()

        def run() -> None:
            loop = self._loop = asyncio.new_event_loop()
            app = web.Application(client_max_size=256 << 20)
            app.router.add_post("/v1/traces", self._handle)
            self._runner = web.AppRunner(app, access_log=None)
            loop.run_until_complete(self._runner.setup())
            site = web.TCPSite(self._runner, "127.0.0.1", self.port)
            loop.run_until_complete(site.start())
            self.port = self._runner.addresses[0][1]
            ready.set()
            loop.run_forever()
            loop.run_until_complete(self._runner.cleanup())
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        assert ready.wait(10), "sink did not start"
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)

    def requests(self) -> list[ExportTraceServiceRequest]:
        return [ExportTraceServiceRequest.FromString(r.body) for r in list(self.received)]

    def span_count(self) -> int:
        return sum(count_spans(r) for r in self.requests())


class GRPCSink:
    """An OTLP/gRPC trace sink. With `fail`, the first `fail_times` exports (all,
    without it) are answered with that code, carrying a RetryInfo of `retry_delay`
    seconds in the status details when given."""

    def __init__(
        self,
        fail: grpc.StatusCode | None = None,
        fail_times: int | None = None,
        retry_delay: float | None = None,
    ) -> None:
        self.received: list[bytes] = []
        self.metadata: list[dict[str, str | bytes]] = []
        self.server = grpc.server(futures.ThreadPoolExecutor(4))

        def export(raw: bytes, context: grpc.ServicerContext) -> ExportTraceServiceResponse:
            self.received.append(raw)
            self.metadata.append(dict(context.invocation_metadata()))
            if fail is not None and (fail_times is None or len(self.received) <= fail_times):
                if retry_delay is not None:
                    status = status_pb2.Status(code=fail.value[0], message="told to fail")
                    info = error_details_pb2.RetryInfo()
                    info.retry_delay.FromNanoseconds(int(retry_delay * 1e9))
                    status.details.add().Pack(info)
                    context.set_trailing_metadata(
                        (("grpc-status-details-bin", status.SerializeToString()),)
                    )
                context.abort(fail, "told to fail")
            return ExportTraceServiceResponse()

        handler = grpc.method_handlers_generic_handler(
            "opentelemetry.proto.collector.trace.v1.TraceService",
            {
                "Export": grpc.unary_unary_rpc_method_handler(
                    export,
                    request_deserializer=None,
                    response_serializer=ExportTraceServiceResponse.SerializeToString,
                )
            },
        )
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")

    def start(self) -> GRPCSink:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop(None)

    def requests(self) -> list[ExportTraceServiceRequest]:
        return [ExportTraceServiceRequest.FromString(b) for b in list(self.received)]

    def span_count(self) -> int:
        return sum(count_spans(r) for r in self.requests())


def count_spans(request: ExportTraceServiceRequest) -> int:
    return sum(len(ss.spans) for rs in request.resource_spans for ss in rs.scope_spans)


def resource_spans_bytes(requests: list[ExportTraceServiceRequest]) -> list[bytes]:
    """Each ResourceSpans as serialized: batching may merge requests, never change these."""
    return sorted(rs.SerializeToString() for r in requests for rs in r.resource_spans)


def span_bytes(requests: list[ExportTraceServiceRequest]) -> list[bytes]:
    return sorted(
        span.SerializeToString()
        for r in requests
        for rs in r.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    )
