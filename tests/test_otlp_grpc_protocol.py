"""The OTLP/gRPC receiver's side of gRPC over HTTP/2, in this process: grpcio's client for
what a real client does, a raw h2 client for what a broken or hostile one does. Every
refusal must carry the right status and be counted under its reason, and the receiver
must go on serving on the same port."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gzip
import random
import socket
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from google.rpc import error_details_pb2, status_pb2
from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RemoteSettingsChanged,
    ResponseReceived,
    StreamReset,
    TrailersReceived,
    WindowUpdated,
)
from hyperframe.frame import DataFrame, Frame, HeadersFrame, RstStreamFrame
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CollectorRegistry

from helpers.otlp import many, request
from tickscope.core.health import Health
from tickscope.pipeline import Pipeline
from tickscope.receivers.config import OTLPGRPCConfig
from tickscope.receivers.intake import Intake
from tickscope.receivers.metrics import REQUEST_REASONS, ReceiverMetrics
from tickscope.receivers.otlp_grpc import TRACE_EXPORT_METHOD, OTLPGRPCReceiver, _grpc_message

BODY = request("svc-h2", many("op", 3)).SerializeToString()


@dataclass
class Receiver:
    registry: CollectorRegistry
    pipeline: Pipeline
    receiver: OTLPGRPCReceiver

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.receiver.port}"

    def rejected(self) -> dict[str, float]:
        """The non-zero rejected-request counters, by reason."""
        out = {}
        for reason in REQUEST_REASONS:
            value = self.registry.get_sample_value(
                "tickscope_receiver_rejected_requests_total",
                {"receiver": "otlp_grpc", "reason": reason},
            )
            if value:
                out[reason] = value
        return out

    def accepted(self) -> float:
        value = self.registry.get_sample_value(
            "tickscope_receiver_accepted_spans_total", {"receiver": "otlp_grpc"}
        )
        assert value is not None
        return value


@asynccontextmanager
async def receiver(**config: Any) -> AsyncIterator[Receiver]:
    registry = CollectorRegistry()
    pipeline = Pipeline(1000, registry)
    intake = Intake(pipeline, ReceiverMetrics(registry, ("otlp_grpc",)))
    r = OTLPGRPCReceiver(OTLPGRPCConfig(port=0, **config), intake, Health())
    await r.start()
    try:
        yield Receiver(registry, pipeline, r)
    finally:
        await r.stop(0)
        await pipeline.stop(grace=1)


async def grpc_export(
    target: str,
    body: bytes,
    method: str = TRACE_EXPORT_METHOD,
    compression: grpc.Compression | None = None,
) -> ExportTraceServiceResponse:
    async with grpc.aio.insecure_channel(target) as channel:
        call = channel.unary_unary(
            method,
            request_serializer=None,
            response_deserializer=ExportTraceServiceResponse.FromString,
        )
        response: ExportTraceServiceResponse = await call(body, timeout=10, compression=compression)
        return response


@dataclass
class Answer:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    data: bytes = b""
    trailers: dict[bytes, bytes] = field(default_factory=dict)
    reset: bool = False
    goaway: bool = False
    closed: bool = False

    @property
    def status(self) -> int:
        """grpc-status from the trailers, or from a trailers-only answer's headers."""
        return int((self.trailers or self.headers)[b"grpc-status"])


def frame(message: bytes, compressed: bool = False) -> bytes:
    return bytes([int(compressed)]) + len(message).to_bytes(4, "big") + message


def h2_call(
    port: int,
    body: bytes,
    headers: dict[bytes, bytes] | None = None,
    end: bool = True,
    then: Callable[[H2Connection, socket.socket], None] | None = None,
    preface: bytes | None = None,
    until_closed: bool = False,
) -> Answer:
    """One call by hand on a fresh connection: `headers` over gRPC's defaults, `body`
    as the DATA, the stream ended unless `end` is False; `then` runs after sending
    (to reset the stream, say). Reads until the call ends, or with `until_closed`
    until the server closes the connection."""
    h2 = H2Connection(H2Configuration(client_side=True, header_encoding=None))
    answer = Answer()
    sent = {
        b":method": b"POST",
        b":scheme": b"http",
        b":path": TRACE_EXPORT_METHOD.encode(),
        b":authority": f"127.0.0.1:{port}".encode(),
        b"content-type": b"application/grpc",
        b"te": b"trailers",
        **(headers or {}),
    }

    def receive(sock: socket.socket) -> list[Any]:
        try:
            data = sock.recv(65536)
        except (ConnectionResetError, TimeoutError):
            data = b""
        if not data:
            answer.closed = True
            return []
        events = h2.receive_data(data)
        pending = h2.data_to_send()
        if pending:
            sock.sendall(pending)
        return events

    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        if preface is not None:
            sock.sendall(preface)
        else:
            h2.initiate_connection()
            sock.sendall(h2.data_to_send())
            # The server's SETTINGS (a 4 MiB stream window) and its connection
            # WINDOW_UPDATE come first: then the body goes in 16 KiB frames at once.
            seen: set[type] = set()
            while not {RemoteSettingsChanged, WindowUpdated} <= seen and not answer.closed:
                seen.update(type(event) for event in receive(sock))
            h2.send_headers(1, list(sent.items()), end_stream=end and not body)
            for start in range(0, len(body), 16384):
                piece = body[start : start + 16384]
                h2.send_data(1, piece, end_stream=end and start + 16384 >= len(body))
            sock.sendall(h2.data_to_send())
            if then is not None:
                then(h2, sock)
        while not answer.closed:
            for event in receive(sock):
                if isinstance(event, ResponseReceived):
                    answer.headers = dict(event.headers)
                elif isinstance(event, DataReceived):
                    answer.data += event.data
                    h2.acknowledge_received_data(event.flow_controlled_length, 1)
                elif isinstance(event, TrailersReceived):
                    answer.trailers = dict(event.headers)
                elif isinstance(event, StreamReset):
                    answer.reset = True
                elif isinstance(event, ConnectionTerminated):
                    answer.goaway = True
            if until_closed:
                continue
            if answer.trailers or b"grpc-status" in answer.headers or answer.goaway:
                break
            if answer.headers.get(b":status", b"200") != b"200":
                break
    return answer


async def call(port: int, body: bytes, **kwargs: Any) -> Answer:
    return await asyncio.to_thread(h2_call, port, body, **kwargs)


# --- what real clients send ---------------------------------------------------------


@pytest.mark.parametrize(
    "compression", [None, grpc.Compression.Gzip, grpc.Compression.Deflate], ids=str
)
def test_grpcio_client_identity_gzip_deflate(compression: grpc.Compression | None) -> None:
    async def main() -> None:
        async with receiver() as r:
            response = await grpc_export(r.target, BODY, compression=compression)
            assert response == ExportTraceServiceResponse()
            assert r.accepted() == 3
            assert r.rejected() == {}

    asyncio.run(main())


def test_unknown_method_is_unimplemented() -> None:
    async def main() -> None:
        async with receiver() as r:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await grpc_export(r.target, BODY, method="/opentelemetry.proto.Nope/Export")
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert info.value.details() == "unknown method /opentelemetry.proto.Nope/Export"
            # The metrics service is not served when no metrics intake is configured.
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await grpc_export(
                    r.target,
                    b"",
                    method="/opentelemetry.proto.collector.metrics.v1.MetricsService/Export",
                )
            assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED
            assert r.rejected() == {}
            assert (await grpc_export(r.target, BODY)) == ExportTraceServiceResponse()

    asyncio.run(main())


def test_too_large_is_resource_exhausted_and_counted() -> None:
    async def main() -> None:
        async with receiver(max_message_bytes=4096) as r:
            big = request("svc-big", many("op", 200)).SerializeToString()
            assert len(big) > 4096
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await grpc_export(r.target, big)
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert info.value.details() == (
                f"message of {len(big)} bytes exceeds 4096 bytes (receiver.grpc.max_message_bytes)"
            )
            assert r.rejected() == {"too_large": 1}
            assert (await grpc_export(r.target, BODY)) == ExportTraceServiceResponse()

    asyncio.run(main())


# --- what broken or hostile clients send ----------------------------------------------


def test_gzip_bomb_stops_at_the_limit() -> None:
    """200 MiB of zeros in 200 KiB of gzip: inflated only as far as the limit."""
    bomb = gzip.compress(b"\0" * (200 << 20), 9)
    assert len(bomb) < 256 << 10

    async def main() -> None:
        async with receiver(max_message_bytes=1 << 20) as r:
            answer = await call(
                r.receiver.port, frame(bomb, compressed=True), headers={b"grpc-encoding": b"gzip"}
            )
            assert answer.status == 8  # RESOURCE_EXHAUSTED
            assert answer.headers[b"grpc-message"] == (
                b"inflated message of 1048577+ bytes exceeds 1048576 bytes "
                b"(receiver.grpc.max_message_bytes)"
            )
            assert r.rejected() == {"too_large": 1}

    asyncio.run(main())


CASES = [
    # (id, body, headers, grpc-status, grpc-message, counted reason)
    (
        "no-message",
        b"",
        {},
        3,
        b"no request message (a unary call sends one)",
        "malformed",
    ),
    (
        "two-messages",
        frame(BODY) + frame(BODY),
        {},
        3,
        f"request of {2 * (len(BODY) + 5)} bytes is not one message of {len(BODY)} bytes "
        "(a unary call sends exactly one)".encode(),
        "malformed",
    ),
    (
        "truncated",
        frame(BODY)[:-3],
        {},
        3,
        f"request of {len(BODY) + 2} bytes is not one message of {len(BODY)} bytes "
        "(a unary call sends exactly one)".encode(),
        "malformed",
    ),
    (
        "not-protobuf",
        frame(b"\xff\xff\xffnot protobuf"),
        {},
        3,
        None,
        "malformed",
    ),
    (
        "compressed-flag-without-encoding",
        frame(gzip.compress(BODY), compressed=True),
        {},
        13,
        b"compressed flag set without a grpc-encoding",
        "malformed",
    ),
    (
        "bad-flags",
        b"\x02" + frame(BODY)[1:],
        {},
        13,
        b"invalid message flags 0x2",
        "malformed",
    ),
    (
        "broken-gzip",
        frame(b"\x1f\x8b\x08\x00garbage", compressed=True),
        {b"grpc-encoding": b"gzip"},
        3,
        None,
        "malformed",
    ),
    (
        "truncated-deflate",
        frame(zlib.compress(BODY)[:-6], compressed=True),
        {b"grpc-encoding": b"deflate"},
        3,
        b"invalid deflate message: truncated",
        "malformed",
    ),
    (
        "unknown-encoding",
        frame(BODY, compressed=True),
        {b"grpc-encoding": b"snappy"},
        12,
        b"unsupported grpc-encoding 'snappy': use gzip, deflate or identity",
        "unsupported_encoding",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "message", "reason"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_calls_are_refused_and_counted(
    body: bytes, headers: dict[bytes, bytes], status: int, message: bytes | None, reason: str
) -> None:
    async def main() -> None:
        async with receiver() as r:
            answer = await call(r.receiver.port, body, headers=headers)
            assert answer.status == status, answer
            if message is not None:
                assert answer.headers[b"grpc-message"] == message
            assert answer.headers[b"content-type"] == b"application/grpc"
            assert r.rejected() == {reason: 1}
            assert r.accepted() == 0
            # The same port serves the next (good) call.
            assert (await grpc_export(r.target, BODY)) == ExportTraceServiceResponse()
            assert r.accepted() == 3

    asyncio.run(main())


def test_not_grpc_content_type_is_http_415() -> None:
    async def main() -> None:
        async with receiver() as r:
            answer = await call(
                r.receiver.port, BODY, headers={b"content-type": b"application/x-protobuf"}
            )
            assert answer.headers[b":status"] == b"415"
            assert r.rejected() == {"unsupported_media_type": 1}

    asyncio.run(main())


def test_not_http2_is_closed_and_counted() -> None:
    async def main() -> None:
        async with receiver() as r:
            answer = await call(
                r.receiver.port, b"", preface=b"POST /v1/traces HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            assert answer.closed
            assert r.rejected() == {"malformed": 1}
            assert (await grpc_export(r.target, BODY)) == ExportTraceServiceResponse()

    asyncio.run(main())


def test_call_abandoned_mid_message_is_counted() -> None:
    def reset(h2: H2Connection, sock: socket.socket) -> None:
        h2.reset_stream(1)
        h2.ping(b"12345678")  # answered after the reset is handled: then we stop reading
        sock.sendall(h2.data_to_send())
        sock.settimeout(0.5)

    async def main() -> None:
        async with receiver() as r:
            await call(r.receiver.port, frame(BODY)[:100], end=False, then=reset)
            for _ in range(100):
                if r.rejected():
                    break
                await asyncio.sleep(0.01)
            assert r.rejected() == {"client_disconnected": 1}
            assert r.accepted() == 0

    asyncio.run(main())


def test_oversized_declared_length_is_refused_before_the_body() -> None:
    """The prefix says 3 GiB: refused on the first frame, the stream reset, nothing held."""

    async def main() -> None:
        async with receiver() as r:
            head = b"\0" + (3 << 30).to_bytes(4, "big") + b"x" * 100
            answer = await call(r.receiver.port, head, end=False)
            assert answer.status == 8
            assert answer.headers[b"grpc-message"] == (
                f"message of {3 << 30} bytes exceeds 20971520 bytes "
                "(receiver.grpc.max_message_bytes)".encode()
            )
            assert r.rejected() == {"too_large": 1}
            assert r.receiver.connections == set() or all(
                not c.calls for c in r.receiver.connections
            )

    asyncio.run(main())


def test_shutting_down_is_unavailable_with_retry_info() -> None:
    async def main() -> None:
        async with receiver() as r:
            r.receiver.closing = True
            answer = await call(r.receiver.port, frame(BODY))
            assert answer.status == 14
            assert answer.headers[b"grpc-message"] == b"shutting down"
            raw = answer.headers[b"grpc-status-details-bin"]
            status = status_pb2.Status.FromString(base64.b64decode(raw + b"=" * (-len(raw) % 4)))
            info = error_details_pb2.RetryInfo()
            assert status.details[0].Unpack(info)
            assert (status.code, info.retry_delay.seconds) == (14, 1)
            assert r.rejected() == {"shutting_down": 1}

    asyncio.run(main())


def test_stop_sends_goaway_and_closes() -> None:
    async def main() -> None:
        async with receiver() as r:
            port = r.receiver.port
            assert port is not None
            # A connection that made its call and idles: stop() must GOAWAY and close it.
            task = asyncio.create_task(call(port, frame(BODY), until_closed=True))
            for _ in range(200):
                if r.accepted():
                    break
                await asyncio.sleep(0.01)
            await r.receiver.stop(1.0)
            answer = await asyncio.wait_for(task, 5)
            assert (answer.status, answer.goaway, answer.closed) == (0, True, True)
            assert r.receiver.connections == set()

    asyncio.run(main())


@pytest.mark.parametrize(
    ("text", "encoded"),
    [
        ("plain text", b"plain text"),
        ("100% full", b"100%25 full"),
        ("caf\u00e9", b"caf%C3%A9"),
        ("line\nbreak", b"line%0Abreak"),
        ("~ tilde", b"~ tilde"),
    ],
)
def test_grpc_message_is_percent_encoded(text: str, encoded: bytes) -> None:
    assert _grpc_message(text) == encoded


def test_max_connection_age_lets_the_call_in_flight_finish() -> None:
    """GOAWAY at max_connection_age: the call already open sends the rest of its message
    and is answered; a call opened after the GOAWAY is refused (REFUSED_STREAM)."""
    message = frame(BODY)
    got: dict[int, list[tuple[str, Any]]] = {}

    def finish_after_goaway(h2: H2Connection, sock: socket.socket) -> None:
        while True:  # until the server's GOAWAY
            events = h2.receive_data(sock.recv(65536))
            if any(isinstance(e, ConnectionTerminated) for e in events):
                break
        # h2 neither sends nor reads after a GOAWAY; the frames go by hand, as a
        # client's HTTP/2 stack still sends and reads them for streams under
        # last_stream_id (h2's HPACK state is kept: its encoder and decoder).
        rest = DataFrame(1, data=message[100:], flags=["END_STREAM"])
        block = h2.encoder.encode(
            [
                (b":method", b"POST"),
                (b":scheme", b"http"),
                (b":path", TRACE_EXPORT_METHOD.encode()),
                (b":authority", b"127.0.0.1"),
                (b"content-type", b"application/grpc"),
            ]
        )
        late = HeadersFrame(3, data=block, flags=["END_HEADERS"])
        sock.sendall(rest.serialize() + late.serialize())
        received = b""
        while data := sock.recv(65536):  # until the server closes the connection
            received += data
        view = memoryview(received)
        while view:
            parsed, length = Frame.parse_frame_header(view[:9])
            parsed.parse_body(view[9 : 9 + length])
            view = view[9 + length :]
            if isinstance(parsed, HeadersFrame):
                headers = dict(h2.decoder.decode(parsed.data, raw=True))
                got.setdefault(parsed.stream_id, []).append(("headers", headers))
            elif isinstance(parsed, DataFrame):
                got.setdefault(parsed.stream_id, []).append(("data", bytes(parsed.data)))
            elif isinstance(parsed, RstStreamFrame):
                got.setdefault(parsed.stream_id, []).append(("reset", parsed.error_code))

    async def main() -> None:
        async with receiver(max_connection_age=0.3, max_connection_age_grace=5) as r:
            answer = await call(r.receiver.port, message[:100], end=False, then=finish_after_goaway)
            assert answer.closed
            assert got[3] == [("reset", 7)]  # REFUSED_STREAM
            (_, head), (_, data), (_, trailers) = got[1]
            assert head[b":status"] == b"200"
            assert ExportTraceServiceResponse.FromString(data[5:]) == ExportTraceServiceResponse()
            assert trailers == {b"grpc-status": b"0"}
            assert r.accepted() == 3
            assert r.rejected() == {}

    asyncio.run(main())


def test_random_bytes_after_the_preface_never_break_the_receiver() -> None:
    """200 seeded random tails after a valid client preface and SETTINGS: each
    connection is closed or left alone, nothing raises inside the event loop, and a
    good call is served afterwards."""
    rng = random.Random(20261201)
    preface = H2Connection(H2Configuration(client_side=True))
    preface.initiate_connection()
    start = preface.data_to_send()
    tails = [rng.randbytes(rng.randrange(1, 400)) for _ in range(200)]
    # Some tails that look like frames: a random type, flags, stream and a short body.
    for _ in range(100):
        body = rng.randbytes(rng.randrange(0, 40))
        header = len(body).to_bytes(3, "big") + bytes([rng.randrange(0, 12), rng.randrange(256)])
        tails.append(header + rng.randrange(0, 8).to_bytes(4, "big") + body)

    async def main() -> None:
        errors: list[dict[str, Any]] = []
        asyncio.get_running_loop().set_exception_handler(lambda _loop, ctx: errors.append(ctx))
        async with receiver() as r:
            port = r.receiver.port
            assert port is not None

            def send_all() -> None:
                for tail in tails:
                    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                        sock.sendall(start + tail)
                        sock.settimeout(0.2)
                        with contextlib.suppress(OSError):
                            sock.recv(65536)

            await asyncio.to_thread(send_all)
            assert (await grpc_export(r.target, BODY)) == ExportTraceServiceResponse()
            assert set(r.rejected()) <= {"malformed", "unsupported_media_type", "too_large"}
        assert errors == []

    asyncio.run(main())
