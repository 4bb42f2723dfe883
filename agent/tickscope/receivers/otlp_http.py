"""OTLP/HTTP receiver: POST /v1/traces and /v1/metrics, protobuf or JSON, identity or gzip.

Responses follow the OTLP specification (protocol/otlp.md, "OTLP/HTTP"):
- 200 with an ExportTraceServiceResponse in the request's encoding, carrying
  partial_success when some spans were rejected;
- 400 with a google.rpc.Status for a body that does not decode;
- 413 for a body over receiver.http.max_body_bytes, measured after
  decompression while decompressing: a gzip bomb is stopped at the limit;
- 415 for a Content-Type other than protobuf/JSON or an unknown Content-Encoding;
- 429 with Retry-After (and a RetryInfo in the Status) when the pipeline is full,
  503 with Retry-After while shutting down.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

from aiohttp import ClientPayloadError, web
from aiohttp.web_protocol import RequestHandler
from google.protobuf import json_format
from google.protobuf.duration_pb2 import Duration as DurationProto
from google.protobuf.message import DecodeError, Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest

from tickscope.core.errors import ListenError
from tickscope.core.health import Health
from tickscope.core.httpconn import MalformedCountingHandler
from tickscope.core.spanview import decode_traces
from tickscope.receivers.config import OTLPHTTPConfig
from tickscope.receivers.errors import RequestError
from tickscope.receivers.intake import Intake
from tickscope.receivers.metrics_intake import MetricsIntake
from tickscope.receivers.otlp_json import decode_metrics_json, decode_traces_json
from tickscope.receivers.ratelimit import RateLimitedLog

__all__ = ["OTLPHTTPReceiver"]

log = logging.getLogger("tickscope.receiver.otlp_http")

T = TypeVar("T")

RECEIVER = "otlp_http"
PROTOBUF = "application/x-protobuf"
JSON = "application/json"
_PROTOBUF_TYPES = frozenset({PROTOBUF, "application/protobuf"})
RETRY_AFTER_SECONDS = 1
# Decompress in pieces of this size, yielding to the event loop between them, so
# a large gzip body cannot hold the loop for the whole inflation.
_INFLATE_PIECE = 1 << 20
# Bodies decoded in a worker thread (asyncio.to_thread) from this size on. JSON is
# the slow case: json_format.ParseDict of a 16 MB trace request took 2.15 s here, in
# pure Python, which the interpreter interrupts every 5 ms (sys.getswitchinterval)
# to let the loop run; only json.loads itself holds the GIL throughout (0.25 s for
# 16 MB). Protobuf is parsed lazily by upb (6.7 MB of spans in 4 ms) and stays on
# the loop. Below 64 KiB the thread hop would cost more than it saves.
_THREAD_DECODE_BYTES = 1 << 16


def _too_large(limit: int) -> RequestError:
    return RequestError(
        413,
        "too_large",
        f"request body exceeds {limit} bytes (receiver.http.max_body_bytes), after decompression",
        code_pb2.RESOURCE_EXHAUSTED,
    )


async def _read_identity(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        parts.append(chunk)
    return b"".join(parts)


async def _read_gzip(chunks: AsyncIterator[bytes], limit: int) -> bytes:
    """Inflate a gzip stream (several members allowed, as RFC 1952 permits),
    never holding more than `limit` inflated bytes."""
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    parts: list[bytes] = []
    size = 0
    compressed = 0
    started = False

    def bad(detail: str) -> RequestError:
        return RequestError(
            400, "malformed", f"invalid gzip body: {detail}", code_pb2.INVALID_ARGUMENT
        )

    async for chunk in chunks:
        compressed += len(chunk)
        if compressed > limit:
            raise _too_large(limit)
        data = chunk
        while data:
            started = True
            try:
                piece = inflater.decompress(data, min(_INFLATE_PIECE, limit - size + 1))
            except zlib.error as exc:
                raise bad(str(exc)) from None
            size += len(piece)
            if size > limit:
                raise _too_large(limit)
            parts.append(piece)
            data = inflater.unconsumed_tail
            if inflater.eof:
                rest = inflater.unused_data + data
                if rest.strip(b"\0"):  # another gzip member follows
                    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
                    data = rest
                else:
                    data = b""
            if data:
                await asyncio.sleep(0)
    if not started:
        return b""
    if not inflater.eof:
        raise bad("truncated stream")
    return b"".join(parts)


class _CountingHandler(MalformedCountingHandler):
    """Counts malformed HTTP through its server's `on_malformed`."""

    def malformed(self) -> None:
        on_malformed = getattr(self._manager, "on_malformed", None)
        if on_malformed is not None:
            on_malformed()


class _CountingServer(web.Server):
    """web.Server making _CountingHandlers (its class is swapped in after the runner
    made it: aiohttp has no option for the handler class)."""

    on_malformed: Callable[[], None] | None = None

    def __call__(self) -> RequestHandler:
        return _CountingHandler(self, loop=self._loop, **self._kwargs)


class _ClientGone(Exception):
    """The client closed the connection before its body was complete."""


def _traces_json_to_protobuf(body: bytes) -> bytes:
    return decode_traces_json(body).SerializeToString()


def decode_metrics(body: bytes) -> ExportMetricsServiceRequest:
    try:
        return ExportMetricsServiceRequest.FromString(body)
    except DecodeError as exc:
        raise RequestError(
            400, "malformed", f"invalid OTLP protobuf: {exc}", code_pb2.INVALID_ARGUMENT
        ) from None


def decode_protobuf(body: bytes) -> Any:
    try:
        return decode_traces(body)
    except DecodeError as exc:
        raise RequestError(
            400, "malformed", f"invalid OTLP protobuf: {exc}", code_pb2.INVALID_ARGUMENT
        ) from None


def encode(message: Message, content_type: str) -> bytes:
    if content_type == JSON:
        return json_format.MessageToJson(message, indent=None).encode()
    return message.SerializeToString()


def status_body(error: RequestError, content_type: str, retry_after: int | None = None) -> bytes:
    status = status_pb2.Status(code=error.grpc_code, message=str(error))
    if retry_after is not None:
        status.details.add().Pack(
            error_details_pb2.RetryInfo(retry_delay=DurationProto(seconds=retry_after))
        )
    return encode(status, content_type)


class OTLPHTTPReceiver:
    name = f"receiver:{RECEIVER}"

    def __init__(
        self,
        config: OTLPHTTPConfig,
        intake: Intake,
        health: Health,
        shutdown_grace: float = 2.0,
        metrics_intake: MetricsIntake | None = None,
    ) -> None:
        self.config = config
        self.shutdown_grace = shutdown_grace
        self.metrics_intake = metrics_intake
        self.intake = intake
        self.health = health
        self.port: int | None = None
        self._runner: web.AppRunner | None = None
        self._closing = False
        self._metrics = intake.metrics
        self._duration = intake.metrics.duration.labels(RECEIVER)
        self._client_log = RateLimitedLog(log, config.client_error_log_interval)
        # Body reads in progress and their deadlines, checked by one watchdog task.
        # Not asyncio.timeout per request: each leaves a cancelled 30 s timer in the
        # loop's heap, ~18,000 at 600 requests/s, and the heap upkeep cost 8-13% of
        # OTLP/HTTP throughput and 17 MiB of RSS (bench_otlp: 308k vs 347k spans/s).
        self._reads: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        app = web.Application(client_max_size=config.max_body_bytes)
        app.router.add_post("/v1/traces", self._traces)
        if metrics_intake is not None:
            app.router.add_post("/v1/metrics", self._metrics_signal)
        self._app = app
        health.require(f"receiver:{RECEIVER}", "not listening yet")

    async def start(self) -> None:
        # auto_decompress off: aiohttp would inflate gzip bodies itself, with no
        # bound on the inflated size; _read_gzip enforces the limit as it goes.
        runner = web.AppRunner(
            self._app,
            access_log=None,
            handle_signals=False,
            auto_decompress=False,
            shutdown_timeout=self.shutdown_grace,
            # aiohttp arms this when a connection opens and again after each response
            # (its default is 3,630 s): a connection that sends nothing, or stops in the
            # middle of its request line or headers, is closed after idle_timeout.
            keepalive_timeout=self.config.idle_timeout,
            # aiohttp's default of 10 s would hold a stalled client's connection that
            # much longer after its 408.
            lingering_time=self.config.close_linger,
        )
        await runner.setup()
        server = runner.server
        if type(server) is web.Server:
            server.__class__ = _CountingServer
            server.on_malformed = self._malformed  # type: ignore[attr-defined]
        site = web.TCPSite(runner, self.config.bind, self.config.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise ListenError(
                "OTLP/HTTP", "receiver.http.port", self.config.bind, self.config.port, exc
            ) from None
        self._runner = runner
        self.port = int(runner.addresses[0][1]) if runner.addresses else self.config.port
        self._watchdog = asyncio.get_running_loop().create_task(
            self._watch_reads(), name="otlp-http-read-watchdog"
        )
        self.health.set_ready(f"receiver:{RECEIVER}")
        log.info(
            "OTLP/HTTP receiver listening",
            extra={"address": self.config.bind, "port": self.port, "endpoints": "/v1/traces"},
        )

    async def stop(self, grace: float = 0.0) -> None:
        """Stop listening; requests in flight get `shutdown_grace` seconds to finish
        (aiohttp takes that when the runner is made, at start; `grace` is not used)."""
        self._closing = True
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._watchdog is not None:
            self._watchdog.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watchdog
            self._watchdog = None

    def _malformed(self) -> None:
        # Logged by aiohttp's own logger, which the host rate-limits (agent/logs.py).
        self._metrics.rejected_requests.labels(RECEIVER, "malformed").inc()

    async def _watch_reads(self) -> None:
        """Cancel body reads past body_read_timeout (checked a few times per timeout,
        at least once a second: a read is cut at most that much late)."""
        loop = asyncio.get_running_loop()
        interval = min(1.0, self.config.body_read_timeout / 4)
        while True:
            await asyncio.sleep(interval)
            now = loop.time()
            for task, deadline in list(self._reads.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    def _reject(
        self, error: RequestError, content_type: str, retry_after: int | None = None
    ) -> web.Response:
        self._metrics.rejected_requests.labels(RECEIVER, error.reason).inc()
        headers = {"Content-Type": content_type}
        if retry_after is not None:
            headers["Retry-After"] = str(retry_after)
        return web.Response(
            status=error.status, body=status_body(error, content_type, retry_after), headers=headers
        )

    async def _traces(self, request: web.Request) -> web.Response:
        return await self._signal(request, "traces")

    async def _metrics_signal(self, request: web.Request) -> web.Response:
        return await self._signal(request, "metrics")

    async def _signal(self, request: web.Request, signal: str) -> web.Response:
        started = time.perf_counter()
        try:
            return await self._handle(request, signal)
        except _ClientGone:
            self._metrics.rejected_requests.labels(RECEIVER, "client_disconnected").inc()
            # No one reads this answer; aiohttp needs one to finish the request.
            response = web.Response(status=400)
            response.force_close()
            return response
        except Exception:
            log.exception("OTLP/HTTP request failed")
            error = RequestError(500, "internal", "internal error", code_pb2.INTERNAL)
            return self._reject(
                error, PROTOBUF if request.content_type in _PROTOBUF_TYPES else JSON
            )
        finally:
            self._duration.observe(time.perf_counter() - started)

    async def _handle(self, request: web.Request, signal: str = "traces") -> web.Response:
        media = request.content_type
        if media in _PROTOBUF_TYPES:
            content_type = PROTOBUF
        elif media == JSON:
            content_type = JSON
        else:
            return self._reject(
                RequestError(
                    415,
                    "unsupported_media_type",
                    f"unsupported Content-Type {media!r}: use {PROTOBUF} or {JSON}",
                    code_pb2.INVALID_ARGUMENT,
                ),
                JSON,
            )
        encoding = request.headers.get("Content-Encoding", "identity").strip().lower()
        if encoding not in ("identity", "", "gzip", "x-gzip"):
            return self._reject(
                RequestError(
                    415,
                    "unsupported_encoding",
                    f"unsupported Content-Encoding {encoding!r}: use gzip or none",
                    code_pb2.INVALID_ARGUMENT,
                ),
                content_type,
            )
        if self._closing:
            error = RequestError(503, "shutting_down", "shutting down", code_pb2.UNAVAILABLE)
            return self._reject(error, content_type, RETRY_AFTER_SECONDS)
        if signal == "traces" and self.intake.pipeline.is_full():
            # Refuse before reading and decoding: backpressure should be cheap.
            return self._busy(content_type)
        limit = self.config.max_body_bytes
        try:
            body = await self._read_body(request, encoding, limit)
            if signal == "metrics":
                if content_type == JSON:
                    metrics_request = await self._off_loop(decode_metrics_json, body)
                else:
                    metrics_request = decode_metrics(body)
            else:
                if content_type == JSON:
                    payload = await self._off_loop(_traces_json_to_protobuf, body)
                else:
                    payload = body
                decoded = decode_protobuf(payload)
        except RequestError as error:
            response = self._reject(error, content_type)
            if error.status in (408, 413):
                # The rest of the body was not read: close rather than keep reading it.
                response.force_close()
            return response
        if signal == "metrics":
            assert self.metrics_intake is not None
            result = await self.metrics_intake.accept_async(metrics_request, RECEIVER)
            return web.Response(
                body=encode(result.response(), content_type), headers={"Content-Type": content_type}
            )
        outcome = self.intake.accept(decoded, payload, RECEIVER)
        if outcome.refused:
            return self._busy(content_type, counted=True)
        return web.Response(
            body=encode(outcome.response(), content_type), headers={"Content-Type": content_type}
        )

    async def _read_body(self, request: web.Request, encoding: str, limit: int) -> bytes:
        """The whole body (inflated), within body_read_timeout; a client that goes away
        or stalls is its own mistake: counted under its reason, logged rate-limited."""
        chunks = request.content.iter_chunked(1 << 16)
        task = asyncio.current_task()
        assert task is not None
        self._reads[task] = asyncio.get_running_loop().time() + self.config.body_read_timeout
        try:
            if encoding in ("gzip", "x-gzip"):
                return await _read_gzip(chunks, limit)
            if request.content_length is not None and request.content_length > limit:
                raise _too_large(limit)
            return await _read_identity(chunks, limit)
        except asyncio.CancelledError:
            if task not in self._expired:
                raise  # shutting down, or the client went away: not ours to answer
            self._expired.discard(task)
            task.uncancel()
            self._client_log.warning(
                "read_timeout",
                "OTLP/HTTP client did not send its body in time; closed",
                timeout_seconds=self.config.body_read_timeout,
                peer=request.remote,
            )
            raise RequestError(
                408,
                "read_timeout",
                f"request body not received within {self.config.body_read_timeout:g}s "
                "(receiver.http.body_read_timeout)",
                code_pb2.DEADLINE_EXCEEDED,
            ) from None
        except (ClientPayloadError, ConnectionError) as exc:
            # aiohttp ends the body stream with ClientPayloadError ("Response payload is
            # not completed") when the peer closes mid-body; nobody is left to answer.
            self._client_log.warning(
                "client_disconnected",
                "OTLP/HTTP client disconnected before sending its whole body",
                error=type(exc).__name__,
                peer=request.remote,
            )
            raise _ClientGone from None
        finally:
            self._reads.pop(task, None)
            self._expired.discard(task)

    @staticmethod
    async def _off_loop(decode: Callable[[bytes], T], body: bytes) -> T:
        if len(body) < _THREAD_DECODE_BYTES:
            return decode(body)
        return await asyncio.to_thread(decode, body)

    def _busy(self, content_type: str, counted: bool = False) -> web.Response:
        error = RequestError(
            429,
            "queue_full",
            f"pipeline queue full ({self.intake.pipeline.capacity} spans); retry after "
            f"{RETRY_AFTER_SECONDS}s",
            code_pb2.RESOURCE_EXHAUSTED,
        )
        if counted:  # the intake counted it already
            headers = {"Content-Type": content_type, "Retry-After": str(RETRY_AFTER_SECONDS)}
            return web.Response(
                status=429,
                body=status_body(error, content_type, RETRY_AFTER_SECONDS),
                headers=headers,
            )
        return self._reject(error, content_type, RETRY_AFTER_SECONDS)
