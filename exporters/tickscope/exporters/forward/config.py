"""The forwarder's configuration (the `forward:` section)."""

from __future__ import annotations

from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import ByteSize, Field, model_validator

from tickscope.core.configtypes import Bytes, Duration, StrictModel

__all__ = ["ForwardConfig", "RetryConfig"]


class RetryConfig(StrictModel):
    initial_interval: Duration = Field(1.0, description="First backoff delay.")
    max_interval: Duration = Field(30.0, description="Longest backoff delay.")
    max_elapsed: Duration = Field(
        300.0, description="Give a batch up (count it failed) after retrying it this long."
    )


class ForwardConfig(StrictModel):
    enabled: bool = Field(False, description="Forward received spans upstream.")
    endpoint: str | None = Field(
        None,
        description="Upstream OTLP endpoint: http(s)://host:port for HTTP (/v1/traces is "
        "appended unless the path already ends with it); for gRPC http://host:port "
        "(plaintext) or https://host:port (TLS).",
    )
    protocol: Literal["http/protobuf", "grpc"] = Field(
        "http/protobuf", description="As OTEL_EXPORTER_OTLP_PROTOCOL."
    )
    headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers (gRPC metadata) sent with every export, e.g. an API key; never logged.",
    )
    compression: Literal["none", "gzip"] = Field(
        "none", description="gzip costs CPU on the sidecar; worth it only over slow links."
    )
    timeout: Duration = Field(10.0, description="Per export request.")
    buffer_spans: int = Field(
        65536, ge=1, description="Spans held for the upstream; past it, new spans are dropped."
    )
    max_batch_spans: int = Field(8192, ge=1, description="Most spans sent in one request.")
    max_batch_bytes: Bytes = Field(
        ByteSize(4 * 1024 * 1024),
        description="Most bytes sent in one request (a received request larger than this "
        "goes alone); the Collector's gRPC receiver takes 4 MiB by default.",
    )
    batch_timeout: Duration = Field(
        0.2, description="How long a batch may wait to fill before it is sent."
    )
    retry: RetryConfig = RetryConfig()

    @model_validator(mode="after")
    def _endpoint_when_enabled(self) -> Self:
        if self.endpoint is not None:
            parts = urlsplit(self.endpoint)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(
                    f"endpoint {self.endpoint!r} must be an http:// or https:// URL with a host"
                )
        elif self.enabled:
            raise ValueError("endpoint is required when forwarding is enabled")
        return self

    def http_url(self) -> str:
        assert self.endpoint is not None
        url = self.endpoint.rstrip("/")
        return url if url.endswith("/v1/traces") else url + "/v1/traces"

    def grpc_target(self) -> tuple[str, bool]:
        """(host:port, use TLS)."""
        assert self.endpoint is not None
        parts = urlsplit(self.endpoint)
        tls = parts.scheme == "https"
        port = parts.port or (443 if tls else 4317)
        return f"{parts.hostname}:{port}", tls

    def redacted_endpoint(self) -> str:
        """The endpoint for logs: no userinfo, no query."""
        if self.endpoint is None:
            return ""
        parts = urlsplit(self.endpoint)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{host}{port}{parts.path}"
