"""Configuration of the OTLP receivers.

Both bind to 127.0.0.1 by default: in a pod the engine shares the sidecar's
network namespace, so nothing outside the pod needs to (or should) reach them.

Size defaults (issue 11, defect 8): 20 MiB, the OpenTelemetry Collector's confighttp
default (MaxRequestBodySize). The old 64 MiB let one OTLP/JSON request of 21-23 MB hold
the event loop 5.4-6.9 s, past the liveness limit; bench/bench_looplag.py measures the
largest request each default accepts. The Collector's gRPC default is grpc-go's 4 MiB;
here gRPC takes the same 20 MiB as HTTP so that a client may switch protocols.

Timeout defaults (defect 16) follow the Collector's confighttp (ReadHeaderTimeout and
IdleTimeout, both 1 min there): a connection that sends nothing, half a request line
or half its headers is closed after `idle_timeout`; a body not received in full
within `body_read_timeout` gets 408 and the connection is closed.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, ByteSize, Field

from tickscope.core.configtypes import Bytes, Duration, ListenHost, Port, StrictModel

__all__ = ["GRPC_MAX_MESSAGE_BYTES", "OTLPGRPCConfig", "OTLPHTTPConfig", "ReceiverConfig"]

_20_MIB = ByteSize(20 * 1024 * 1024)

# The receiver is h2, not grpcio, but the clients are gRPC's: grpc-core takes message
# sizes as a C int, so no client sends a message past 2^31-1 bytes; the limit says so
# at startup rather than accepting a value no client can reach.
GRPC_MAX_MESSAGE_BYTES = 2**31 - 1
# Kept with the limits grpcio's server had (millisecond C ints, about 24.8 days), so a
# config valid before the h2 receiver stays valid and one refused stays refused.
_GRPC_MAX_MS_SECONDS = (2**31 - 1) / 1000


def _grpc_message_size(value: Any) -> Any:
    if int(value) > GRPC_MAX_MESSAGE_BYTES:
        raise ValueError(
            f"{int(value)} bytes is more than gRPC can take: its message size is a 32-bit "
            f"int, at most {GRPC_MAX_MESSAGE_BYTES} bytes (2GiB - 1)"
        )
    return value


def _grpc_ms(value: float) -> float:
    if value > _GRPC_MAX_MS_SECONDS:
        raise ValueError(
            f"{value:g}s is more than gRPC can take: its timeouts are 32-bit ints of "
            f"milliseconds, at most {_GRPC_MAX_MS_SECONDS:g}s"
        )
    return value


GRPCBytes = Annotated[Bytes, AfterValidator(_grpc_message_size)]
GRPCDuration = Annotated[Duration, AfterValidator(_grpc_ms)]


class OTLPHTTPConfig(StrictModel):
    enabled: bool = Field(True, description="Serve OTLP/HTTP.")
    bind: ListenHost = Field("127.0.0.1", description="Address the OTLP/HTTP receiver listens on.")
    port: Port = Field(4318, description="OTLP/HTTP port.")
    max_body_bytes: Bytes = Field(
        _20_MIB,
        description="Largest request body, after decompression; checked while decompressing, "
        "so a gzip bomb stops there. Larger requests get 413. The default (the Collector's) "
        "keeps the event loop's lag under 1s for the largest request (bench/bench_looplag.py).",
    )
    idle_timeout: Duration = Field(
        60.0,
        description="A connection with no request in progress (idle between requests, or "
        "still sending its request line and headers) is closed after this long.",
    )
    body_read_timeout: Duration = Field(
        30.0,
        description="Time allowed to receive a request's whole body; a client still "
        "sending after this long gets 408 and the connection is closed (counted with "
        "reason read_timeout).",
    )
    close_linger: Duration = Field(
        2.0,
        description="After an answer sent before the whole body was read (408, 413), the "
        "rest of the body is read and discarded for up to this long before the connection "
        "is closed, so that the client reads the answer rather than a reset.",
    )
    client_error_log_interval: Duration = Field(
        60.0,
        description="Client mistakes (a disconnect mid-body, a body read timeout) are "
        "logged as one WARNING per reason at most once per interval, with how many "
        "happened since; they are all counted.",
    )


class OTLPGRPCConfig(StrictModel):
    enabled: bool = Field(
        True,
        description="Serve OTLP/gRPC (unary Export calls for traces and metrics, HTTP/2 "
        "without TLS; gzip and deflate messages accepted).",
    )
    bind: ListenHost = Field("127.0.0.1", description="Address the OTLP/gRPC receiver listens on.")
    port: Port = Field(4317, description="OTLP/gRPC port.")
    max_message_bytes: GRPCBytes = Field(
        _20_MIB,
        description="Largest gRPC message, after decompression; at most 2147483647 "
        "(gRPC's limit, a 32-bit int).",
    )
    handshake_timeout: GRPCDuration = Field(
        10.0,
        description="A new connection must complete the HTTP/2 handshake within this long "
        "or is closed (a client that connects and sends nothing, or half the preface).",
    )
    idle_timeout: GRPCDuration = Field(
        60.0,
        description="A connection with no call in progress for this long is closed (GOAWAY; "
        "clients reconnect when they next send).",
    )
    max_connection_age: GRPCDuration = Field(
        600.0,
        description="Connections are closed gracefully (GOAWAY) after this long, so that "
        "a connection cannot be held forever by a call that never finishes sending.",
    )
    max_connection_age_grace: GRPCDuration = Field(
        30.0,
        description="After max_connection_age, calls in progress get this long to finish "
        "(the body read timeout of gRPC: a half-sent message is cut off here).",
    )
    client_error_log_interval: Duration = Field(
        60.0,
        description="Client mistakes (a broken HTTP/2 stream, a call abandoned mid-message, "
        "a handshake timeout) are logged as one WARNING per reason at most once per "
        "interval, with how many happened since; they are all counted.",
    )


class ReceiverConfig(StrictModel):
    http: OTLPHTTPConfig = OTLPHTTPConfig()
    grpc: OTLPGRPCConfig = OTLPGRPCConfig()
