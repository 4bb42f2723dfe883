"""OTLP/gRPC receiver: the TraceService and MetricsService Export RPCs on HTTP/2 (h2).

Why not grpcio: its server costs ~11 MiB of RSS with its threads (cygrpc alone maps
9.4 MiB), a sixth of the sidecar's default footprint, to serve two unary methods
whose request is one length-prefixed protobuf message. h2 (pure Python, ~1.4 MiB
imported) does the HTTP/2 framing, HPACK and flow control; this module does the
gRPC part of the protocol (gRPC over HTTP2, grpc/doc/PROTOCOL-HTTP2.md): the
5-byte message prefix, grpc-encoding (identity, gzip, deflate), and the status in
trailers, trailers-only for errors. The clients it is tested with are the real
ones: grpcio's, through the OpenTelemetry SDK's OTLP/gRPC exporter.

The message bytes are queued (and forwarded) as they came, and decoded here with
opentelemetry-proto's classes. Compressed messages are inflated in pieces, never
past receiver.grpc.max_message_bytes (a gzip bomb stops at the limit).

Status codes (OTLP specification, "OTLP/gRPC"): INVALID_ARGUMENT for a message
that does not decode; RESOURCE_EXHAUSTED for one over max_message_bytes, and with
a RetryInfo when the pipeline is full (the OTel SDKs retry it then); UNAVAILABLE
with a RetryInfo while shutting down; UNIMPLEMENTED for other methods and
encodings. Every refusal is counted in tickscope_receiver_rejected_requests_total
under the same reasons as OTLP/HTTP's.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf.duration_pb2 import Duration as DurationProto
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, error_details_pb2, status_pb2
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes, Settings
from hyperframe.frame import DataFrame, GoAwayFrame
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)

from tickscope.core.errors import ListenError
from tickscope.core.health import Health
from tickscope.core.spanview import decode_traces
from tickscope.receivers.config import OTLPGRPCConfig
from tickscope.receivers.intake import Intake
from tickscope.receivers.metrics_intake import MetricsIntake
from tickscope.receivers.ratelimit import RateLimitedLog

__all__ = ["METRICS_EXPORT_METHOD", "TRACE_EXPORT_METHOD", "OTLPGRPCReceiver"]

log = logging.getLogger("tickscope.receiver.otlp_grpc")

RECEIVER = "otlp_grpc"
TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
TRACE_EXPORT_METHOD = f"/{TRACE_SERVICE}/Export"
METRICS_SERVICE = "opentelemetry.proto.collector.metrics.v1.MetricsService"
METRICS_EXPORT_METHOD = f"/{METRICS_SERVICE}/Export"
RETRY_AFTER_SECONDS = 1
ACCEPT_ENCODING = b"identity,deflate,gzip"
_WBITS = {b"gzip": 16 + zlib.MAX_WBITS, b"deflate": zlib.MAX_WBITS}
# Inflate in pieces of this size, yielding to the event loop between them (as the
# HTTP receiver does), so a large compressed message cannot hold the loop.
_INFLATE_PIECE = 1 << 20
# HTTP/2 settings sent to clients. 100 concurrent calls per connection (an SDK's
# exporter sends one at a time); frames up to 1 MiB and a 4 MiB window per call
# and 16 MiB per connection, so that a 1 MB export arrives in a few frames without
# waiting for WINDOW_UPDATEs (h2 handles each frame in Python: ~15 µs a frame).
_MAX_CONCURRENT_STREAMS = 100
_MAX_HEADER_LIST_SIZE = 16 * 1024
_MAX_FRAME_SIZE = 1 << 20
_STREAM_WINDOW = 4 << 20
_CONNECTION_WINDOW = 16 << 20
_H2_DEFAULT_WINDOW = 65535


def _data_frame_repr(frame: DataFrame) -> str:
    return f"<{len(frame.data)} bytes>"


# h2 logs every frame it receives as `logger.trace("...", repr(frame))`, building the
# repr even when nothing logs it; hyperframe's DataFrame repr re-serializes the body
# and hex-encodes all of it to show 10 bytes. That was 9.9% of the sidecar's CPU under
# OTLP/gRPC load (py-spy, 4 connections of 512-span exports). A DataFrame's repr here
# says its size instead; nothing else in the process shows frames.
DataFrame._body_repr = _data_frame_repr  # type: ignore[method-assign,assignment]


class _Refusal(Exception):
    """A call answered with a non-OK status: code, message, counted reason."""

    def __init__(
        self, code: int, message: str, reason: str | None, retry_after: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason
        self.retry_after = retry_after


def _shutting_down() -> _Refusal:
    return _Refusal(code_pb2.UNAVAILABLE, "shutting down", "shutting_down", RETRY_AFTER_SECONDS)


def _decoded(decode: Callable[[bytes], Any], raw: bytes) -> Any:
    """`decode(raw)`, or the INVALID_ARGUMENT refusal of a message that is no OTLP."""
    try:
        return decode(raw)
    except DecodeError as exc:
        raise _Refusal(
            code_pb2.INVALID_ARGUMENT, f"invalid OTLP protobuf: {exc}", "malformed"
        ) from None


def _grpc_message(text: str) -> bytes:
    """grpc-message is percent-encoded UTF-8: bytes outside 0x20..0x7E, and '%'."""
    return b"".join(
        bytes([b]) if 0x20 <= b <= 0x7E and b != 0x25 else b"%%%02X" % b
        for b in text.encode("utf-8")
    )


def _status_details(code: int, message: str, retry_after: int) -> bytes:
    """grpc-status-details-bin: a google.rpc.Status with a RetryInfo, base64 (no padding,
    as gRPC writes -bin metadata)."""
    status = status_pb2.Status(code=code, message=message)
    status.details.add().Pack(
        error_details_pb2.RetryInfo(retry_delay=DurationProto(seconds=retry_after))
    )
    return base64.b64encode(status.SerializeToString()).rstrip(b"=")


@dataclass
class _Call:
    """One RPC (an HTTP/2 stream) of a connection."""

    stream_id: int
    method: bytes
    encoding: bytes
    body: bytearray = field(default_factory=bytearray)
    answered: bool = False  # headers of the response sent (the call may still be running)
    task: asyncio.Task[None] | None = None


class _Connection(asyncio.Protocol):
    """One client connection: h2's state machine, its calls, and its three clocks
    (handshake, idle, age)."""

    def __init__(self, receiver: OTLPGRPCReceiver) -> None:
        self.receiver = receiver
        self.config = receiver.config
        self.h2 = H2Connection(H2Configuration(client_side=False, header_encoding=None))
        self.h2.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: _MAX_CONCURRENT_STREAMS,
                SettingCodes.MAX_HEADER_LIST_SIZE: _MAX_HEADER_LIST_SIZE,
                SettingCodes.MAX_FRAME_SIZE: _MAX_FRAME_SIZE,
                SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW,
            },
        )
        # h2 takes the larger frame size only once the client ACKs our SETTINGS, and
        # checks frames against it per receive_data call: grpc-core sends its ACK and
        # 128 KiB frames in one segment, which h2 would refuse as FRAME_SIZE_ERROR.
        self.h2.max_inbound_frame_size = _MAX_FRAME_SIZE
        self.transport: asyncio.Transport | None = None
        self.calls: dict[int, _Call] = {}
        self.peer = ""
        self.handshaken = False
        self.going_away = False  # our GOAWAY is sent: no calls past _last_stream_id
        self._last_stream_id = 0
        self._window = asyncio.Event()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._loop = asyncio.get_running_loop()

    # -- asyncio.Protocol ---------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if isinstance(peer, tuple) else str(peer)
        self.receiver.connections.add(self)
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_CONNECTION_WINDOW - _H2_DEFAULT_WINDOW)
        self._flush()
        self._timer("handshake", self.config.handshake_timeout, self._handshake_expired)
        self._timer("age", self.config.max_connection_age, self._age_reached)

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except ProtocolError as exc:
            # h2 queued a GOAWAY with the error; send it and hang up.
            self.receiver.count("malformed")
            self.receiver.client_log.warning(
                "malformed",
                "OTLP/gRPC client broke the HTTP/2 protocol; connection closed",
                error=str(exc),
                peer=self.peer,
            )
            self._flush()
            self._close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                self._request(event.stream_id, event.headers)
            elif isinstance(event, DataReceived):
                self._data(event.stream_id, event.data, event.flow_controlled_length)
            elif isinstance(event, StreamEnded):
                self._ended(event.stream_id)
            elif isinstance(event, StreamReset):
                self._reset(event.stream_id)
            elif isinstance(event, WindowUpdated):
                self._window.set()
            elif isinstance(event, RemoteSettingsChanged) and not self.handshaken:
                # The client's preface and first SETTINGS are in: the handshake is done.
                self.handshaken = True
                self._cancel("handshake")
                self._idle()
            elif isinstance(event, ConnectionTerminated):
                # The client's GOAWAY: h2 is closed now and can send nothing more, not
                # even answers to calls in flight (a client sends it when it is done).
                self._flush()
                self._close()
                return
        self._flush()

    def connection_lost(self, exc: Exception | None) -> None:
        for name in list(self._timers):
            self._cancel(name)
        for call in self.calls.values():
            if call.task is None:  # still receiving its message
                self.receiver.count("client_disconnected")
            else:
                call.task.cancel()
        self.calls.clear()
        self._window.set()
        self.transport = None
        self.receiver.closed(self)

    # -- HTTP/2 events ------------------------------------------------------------

    def _request(self, stream_id: int, headers: Any) -> None:
        if self.going_away and stream_id > self._last_stream_id:
            # Opened after our GOAWAY crossed it: REFUSED_STREAM, which a client
            # retries on a new connection (RFC 9113, 8.7); not counted.
            self.h2.reset_stream(stream_id, ErrorCodes.REFUSED_STREAM)
            return
        self._cancel("idle")
        values = {bytes(k): bytes(v) for k, v in headers}
        call = _Call(
            stream_id, values.get(b":path", b""), values.get(b"grpc-encoding", b"identity")
        )
        self.calls[stream_id] = call
        content_type = values.get(b"content-type", b"")
        if values.get(b":method") != b"POST" or not (
            content_type == b"application/grpc" or content_type.startswith(b"application/grpc+")
        ):
            # Not gRPC: answered in HTTP, as the gRPC spec says (415 for the content type).
            self.receiver.count("unsupported_media_type")
            call.answered = True
            self.h2.send_headers(stream_id, [(b":status", b"415")], end_stream=True)
            self._forget(stream_id, reset=True)
            return
        if self.receiver.closing:
            self._refuse(call, _shutting_down())
        elif call.method not in self.receiver.methods:
            name = call.method.decode("utf-8", "replace")
            self._refuse(call, _Refusal(code_pb2.UNIMPLEMENTED, f"unknown method {name}", None))
        elif call.encoding not in _WBITS and call.encoding != b"identity":
            encoding = call.encoding.decode("utf-8", "replace")
            self._refuse(
                call,
                _Refusal(
                    code_pb2.UNIMPLEMENTED,
                    f"unsupported grpc-encoding {encoding!r}: use gzip, deflate or identity",
                    "unsupported_encoding",
                ),
            )

    def _data(self, stream_id: int, data: bytes, flow_controlled: int) -> None:
        # Acknowledged at once: what a call may hold is bounded by max_message_bytes,
        # checked here, not by the window.
        self.h2.acknowledge_received_data(flow_controlled, stream_id)
        call = self.calls.get(stream_id)
        if call is None or call.answered:
            return
        call.body += data
        limit = int(self.config.max_message_bytes)
        declared = int.from_bytes(call.body[1:5], "big") if len(call.body) >= 5 else 0
        if declared > limit or len(call.body) > limit + 5:
            self._refuse(call, self.receiver.too_large(max(declared, len(call.body) - 5)))

    def _ended(self, stream_id: int) -> None:
        call = self.calls.get(stream_id)
        if call is None or call.answered:
            return
        call.task = asyncio.create_task(self._serve(call))

    def _reset(self, stream_id: int) -> None:
        call = self.calls.pop(stream_id, None)
        if call is None:
            return
        if call.task is not None:
            call.task.cancel()  # the client gave up (its deadline passed): nobody to answer
        elif not call.answered:
            self.receiver.count("client_disconnected")
        self._idle()

    # -- calls --------------------------------------------------------------------

    async def _serve(self, call: _Call) -> None:
        started = time.perf_counter()
        try:
            payload = await self.receiver.export(call.method, await self._message(call))
        except _Refusal as refusal:
            self._refuse(call, refusal)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("OTLP/gRPC request failed")
            self._refuse(call, _Refusal(code_pb2.INTERNAL, "internal error", "internal"))
        else:
            await self._respond(call, payload)
        finally:
            self.receiver.duration.observe(time.perf_counter() - started)
            self._forget(call.stream_id)
            self._flush()

    async def _message(self, call: _Call) -> bytes:
        """The call's one request message, inflated."""
        body = call.body
        if len(body) < 5:
            raise _Refusal(
                code_pb2.INVALID_ARGUMENT,
                "no request message (a unary call sends one)",
                "malformed",
            )
        length = int.from_bytes(body[1:5], "big")
        if len(body) != 5 + length:
            raise _Refusal(
                code_pb2.INVALID_ARGUMENT,
                f"request of {len(body)} bytes is not one message of {length} bytes "
                "(a unary call sends exactly one)",
                "malformed",
            )
        message = bytes(memoryview(body)[5:])
        call.body = bytearray()
        if body[0] == 0:
            return message
        if body[0] != 1 or call.encoding == b"identity":
            raise _Refusal(
                code_pb2.INTERNAL,
                "compressed flag set without a grpc-encoding"
                if body[0] == 1
                else f"invalid message flags {body[0]:#x}",
                "malformed",
            )
        return await self._inflate(message, _WBITS[call.encoding], call.encoding.decode())

    async def _inflate(self, data: bytes, wbits: int, encoding: str) -> bytes:
        limit = int(self.config.max_message_bytes)
        inflater = zlib.decompressobj(wbits=wbits)
        parts: list[bytes] = []
        size = 0
        while True:
            try:
                piece = inflater.decompress(data, min(_INFLATE_PIECE, limit - size + 1))
            except zlib.error as exc:
                raise _Refusal(
                    code_pb2.INVALID_ARGUMENT, f"invalid {encoding} message: {exc}", "malformed"
                ) from None
            size += len(piece)
            if size > limit:
                raise self.receiver.too_large(size, inflated=True)
            parts.append(piece)
            data = inflater.unconsumed_tail
            if not data:
                break
            await asyncio.sleep(0)
        if not inflater.eof:
            raise _Refusal(
                code_pb2.INVALID_ARGUMENT, f"invalid {encoding} message: truncated", "malformed"
            )
        return b"".join(parts)

    async def _respond(self, call: _Call, payload: bytes) -> None:
        with contextlib.suppress(H2Error):  # the client reset the call or went away meanwhile
            await self._send_response(call, payload)

    async def _send_response(self, call: _Call, payload: bytes) -> None:
        if self.transport is None or call.stream_id not in self.calls:
            return
        call.answered = True
        self.h2.send_headers(
            call.stream_id,
            [
                (b":status", b"200"),
                (b"content-type", b"application/grpc"),
                (b"grpc-accept-encoding", ACCEPT_ENCODING),
            ],
        )
        data = memoryview(b"\0" + len(payload).to_bytes(4, "big") + payload)
        while data:
            if self.transport is None or call.stream_id not in self.calls:
                return
            size = min(
                self.h2.local_flow_control_window(call.stream_id),
                self.h2.max_outbound_frame_size,
                len(data),
            )
            if size <= 0:
                # The client's window is full: wait for its WINDOW_UPDATE.
                self._window.clear()
                self._flush()
                await self._window.wait()
                continue
            self.h2.send_data(call.stream_id, data[:size].tobytes())
            data = data[size:]
        self.h2.send_headers(call.stream_id, [(b"grpc-status", b"0")], end_stream=True)

    def _refuse(self, call: _Call, refusal: _Refusal) -> None:
        """Answer trailers-only with refusal's status, counted under its reason; a call
        refused before its message ended is reset (NO_ERROR), so it sends no more."""
        if refusal.reason is not None:
            self.receiver.count(refusal.reason)
        if call.answered or self.transport is None or call.stream_id not in self.calls:
            return
        call.answered = True
        trailers = [
            (b":status", b"200"),
            (b"content-type", b"application/grpc"),
            (b"grpc-accept-encoding", ACCEPT_ENCODING),
            (b"grpc-status", str(refusal.code).encode()),
            (b"grpc-message", _grpc_message(refusal.message)),
        ]
        if refusal.retry_after is not None:
            details = _status_details(refusal.code, refusal.message, refusal.retry_after)
            trailers.append((b"grpc-status-details-bin", details))
        with contextlib.suppress(H2Error):  # the stream closed meanwhile
            self.h2.send_headers(call.stream_id, trailers, end_stream=True)
        if call.task is None:
            self._forget(call.stream_id, reset=True)

    def _forget(self, stream_id: int, reset: bool = False) -> None:
        self.calls.pop(stream_id, None)
        if reset:
            with contextlib.suppress(H2Error):  # closed already: the client had ended its side
                self.h2.reset_stream(stream_id, ErrorCodes.NO_ERROR)
        self._idle()

    # -- clocks and shutdown ------------------------------------------------------

    def _timer(self, name: str, delay: float, callback: Callable[[], None]) -> None:
        self._cancel(name)
        self._timers[name] = self._loop.call_later(delay, callback)

    def _cancel(self, name: str) -> None:
        timer = self._timers.pop(name, None)
        if timer is not None:
            timer.cancel()

    def _idle(self) -> None:
        """No call in progress: start the idle clock, or hang up if going away."""
        if self.calls or not self.handshaken or self.transport is None:
            return
        if self.going_away:
            self._close()
        else:
            self._timer("idle", self.config.idle_timeout, self.go_away)

    def _handshake_expired(self) -> None:
        self.receiver.client_log.warning(
            "handshake_timeout",
            "OTLP/gRPC client did not complete the HTTP/2 handshake in time; closed",
            timeout_seconds=self.config.handshake_timeout,
            peer=self.peer,
        )
        self._close()

    def _age_reached(self) -> None:
        self.go_away()
        self._timer("grace", self.config.max_connection_age_grace, self._grace_over)

    def _grace_over(self) -> None:
        cut = sum(1 for call in self.calls.values() if call.task is None)
        for _ in range(cut):
            self.receiver.count("read_timeout")
        if cut:
            self.receiver.client_log.warning(
                "read_timeout",
                "OTLP/gRPC client did not finish sending within max_connection_age_grace; closed",
                calls=cut,
                peer=self.peer,
            )
        self._close()

    def go_away(self) -> None:
        """GOAWAY: no new calls; the connection closes when the last one ends."""
        if self.transport is None or self.going_away:
            return
        self.going_away = True
        self._cancel("idle")
        # Written past h2, not with h2's close_connection(): that moves h2's connection
        # to CLOSED, where it refuses the DATA of calls still in flight (as a protocol
        # error) and their answers. The calls up to last_stream_id are finished here.
        self._last_stream_id = self.h2.highest_inbound_stream_id
        self._flush()
        goaway = GoAwayFrame(stream_id=0, last_stream_id=self._last_stream_id, error_code=0)
        self.transport.write(goaway.serialize())
        self._idle()

    def _flush(self) -> None:
        data = self.h2.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    def _close(self) -> None:
        """Hang up, after what h2 has queued (a last call's answer, say)."""
        if self.transport is not None:
            self._flush()
            self.transport.close()


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
        self.closing = False
        self.connections: set[_Connection] = set()
        self.methods: dict[bytes, Callable[[bytes], Awaitable[bytes]]] = {
            TRACE_EXPORT_METHOD.encode(): self._export_traces
        }
        if metrics_intake is not None:
            self.methods[METRICS_EXPORT_METHOD.encode()] = self._export_metrics
        self.client_log = RateLimitedLog(log, config.client_error_log_interval)
        self._server: asyncio.Server | None = None
        self._drained = asyncio.Event()  # set when the last connection closes
        self._metrics = intake.metrics
        self.duration = intake.metrics.duration.labels(RECEIVER)
        health.require(f"receiver:{RECEIVER}", "not listening yet")

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            server = await loop.create_server(
                lambda: _Connection(self),
                self.config.bind,
                self.config.port,
                # One process per pod: never share the port with a second sidecar.
                reuse_port=False,
            )
        except OSError as exc:
            raise ListenError(
                "OTLP/gRPC", "receiver.grpc.port", self.config.bind, self.config.port, exc
            ) from None
        self._server = server
        self.port = int(server.sockets[0].getsockname()[1])
        self.health.set_ready(f"receiver:{RECEIVER}")
        log.info(
            "OTLP/gRPC receiver listening",
            extra={"address": self.config.bind, "port": self.port, "service": TRACE_SERVICE},
        )

    async def stop(self, grace: float = 5.0) -> None:
        """Stop listening, GOAWAY every connection, give calls in progress `grace`
        seconds, then close what is left."""
        self.closing = True
        if self._server is None:
            return
        self._server.close()
        for connection in list(self.connections):
            connection.go_away()
        self._drained.clear()
        if self.connections:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), grace)
        for connection in list(self.connections):
            connection._close()
        await self._server.wait_closed()
        self._server = None

    def closed(self, connection: _Connection) -> None:
        self.connections.discard(connection)
        if not self.connections:
            self._drained.set()

    def count(self, reason: str) -> None:
        self._metrics.rejected_requests.labels(RECEIVER, reason).inc()

    def too_large(self, size: int, inflated: bool = False) -> _Refusal:
        limit = int(self.config.max_message_bytes)
        what = "inflated message" if inflated else "message"
        return _Refusal(
            code_pb2.RESOURCE_EXHAUSTED,
            f"{what} of {size}{'+' if inflated else ''} bytes exceeds {limit} bytes "
            "(receiver.grpc.max_message_bytes)",
            "too_large",
        )

    async def export(self, method: bytes, message: bytes) -> bytes:
        """The serialized response to one Export call."""
        if self.closing:
            raise _shutting_down()
        return await self.methods[method](message)

    def _busy(self, counted: bool = False) -> _Refusal:
        return _Refusal(
            code_pb2.RESOURCE_EXHAUSTED,
            f"pipeline queue full ({self.intake.pipeline.capacity} spans); retry after "
            f"{RETRY_AFTER_SECONDS}s",
            None if counted else "queue_full",  # the intake counted a refused request already
            RETRY_AFTER_SECONDS,
        )

    async def _export_traces(self, raw: bytes) -> bytes:
        if self.intake.pipeline.is_full():
            raise self._busy()  # before decoding: backpressure should be cheap
        request = _decoded(decode_traces, raw)
        outcome = self.intake.accept(request, raw, RECEIVER)
        if outcome.refused:
            raise self._busy(counted=True)
        result: bytes = outcome.response().SerializeToString()
        return result

    async def _export_metrics(self, raw: bytes) -> bytes:
        intake = self.metrics_intake
        assert intake is not None
        request: ExportMetricsServiceRequest = _decoded(ExportMetricsServiceRequest.FromString, raw)
        # In pieces, yielding between them: see MetricsIntake.accept_async.
        result: bytes = (
            (await intake.accept_async(request, RECEIVER)).response().SerializeToString()
        )
        return result
