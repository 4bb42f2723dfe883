"""Configuration of the OTLP receivers.

Both bind to 127.0.0.1 by default: in a pod the engine shares the sidecar's
network namespace, so nothing outside the pod needs to (or should) reach them.
"""

from __future__ import annotations

from pydantic import ByteSize, Field

from tickscope.core.configtypes import Bytes, ListenHost, Port, StrictModel

__all__ = ["OTLPGRPCConfig", "OTLPHTTPConfig", "ReceiverConfig"]

# The OTLP specification's recommended maximum request size.
_64_MIB = ByteSize(64 * 1024 * 1024)


class OTLPHTTPConfig(StrictModel):
    enabled: bool = Field(True, description="Serve OTLP/HTTP.")
    bind: ListenHost = Field("127.0.0.1", description="Address the OTLP/HTTP receiver listens on.")
    port: Port = Field(4318, description="OTLP/HTTP port.")
    max_body_bytes: Bytes = Field(
        _64_MIB,
        description="Largest request body, after decompression; checked while decompressing, "
        "so a gzip bomb stops there. Larger requests get 413.",
    )


class OTLPGRPCConfig(StrictModel):
    enabled: bool = Field(
        True,
        description="Serve OTLP/gRPC (loads grpcio: about 11 MiB more RSS; the shim sends "
        "OTLP/HTTP by default).",
    )
    bind: ListenHost = Field("127.0.0.1", description="Address the OTLP/gRPC receiver listens on.")
    port: Port = Field(4317, description="OTLP/gRPC port.")
    max_message_bytes: Bytes = Field(
        _64_MIB, description="Largest gRPC message, after decompression."
    )


class ReceiverConfig(StrictModel):
    http: OTLPHTTPConfig = OTLPHTTPConfig()
    grpc: OTLPGRPCConfig = OTLPGRPCConfig()
