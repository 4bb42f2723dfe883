"""Configuration of the OTLP receivers.

Both bind to 127.0.0.1 by default: in a pod the engine shares the sidecar's
network namespace, so nothing outside the pod needs to (or should) reach them.
"""

from __future__ import annotations

from pydantic import ByteSize

from agent.configtypes import Bytes, ListenHost, Port, StrictModel

__all__ = ["OTLPGRPCConfig", "OTLPHTTPConfig", "ReceiverConfig"]

# The OTLP specification's recommended maximum request size.
_64_MIB = ByteSize(64 * 1024 * 1024)


class OTLPHTTPConfig(StrictModel):
    enabled: bool = True
    bind: ListenHost = "127.0.0.1"
    port: Port = 4318
    # Applied to the decompressed body, while decompressing (a gzip bomb stops there).
    max_body_bytes: Bytes = _64_MIB


class OTLPGRPCConfig(StrictModel):
    enabled: bool = True
    bind: ListenHost = "127.0.0.1"
    port: Port = 4317
    max_message_bytes: Bytes = _64_MIB


class ReceiverConfig(StrictModel):
    http: OTLPHTTPConfig = OTLPHTTPConfig()
    grpc: OTLPGRPCConfig = OTLPGRPCConfig()
