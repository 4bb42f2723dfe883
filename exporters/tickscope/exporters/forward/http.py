"""Forwarding over OTLP/HTTP (protobuf): one aiohttp session to the upstream, the
specification's retryable statuses, Retry-After, and partial success."""

from __future__ import annotations

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from tickscope.exporters.forward.config import ForwardConfig
from tickscope.exporters.forward.retry import retry_after
from tickscope.exporters.forward.sender import OK, SendResult

__all__ = ["RETRYABLE_HTTP", "HttpSender"]

RETRYABLE_HTTP = frozenset({429, 502, 503, 504})


def partial_success(body: bytes) -> SendResult:
    """A 200's body: OK, or the spans the upstream says it rejected."""
    if not body:
        return OK
    try:
        response = ExportTraceServiceResponse.FromString(body)
    except Exception:
        return OK  # a 200 whose body is not OTLP: the spans were taken
    rejected = response.partial_success.rejected_spans
    if rejected:
        return SendResult(
            False, None, response.partial_success.error_message or "partial success", rejected
        )
    return OK


class HttpSender:
    def __init__(self, config: ForwardConfig) -> None:
        # Made inside the running loop (the forwarder's start): aiohttp binds to it.
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=config.timeout), auto_decompress=True
        )
        self._url = config.http_url()
        self._headers = {"Content-Type": "application/x-protobuf", **config.headers}
        if config.compression == "gzip":
            self._headers["Content-Encoding"] = "gzip"

    async def send(self, body: bytes) -> SendResult:
        try:
            async with self._session.post(self._url, data=body, headers=self._headers) as r:
                content = await r.read()
                if r.status == 200:
                    return partial_success(content)
                message = f"HTTP {r.status}"
                if r.status in RETRYABLE_HTTP:
                    return SendResult(True, retry_after(r.headers.get("Retry-After")), message)
                return SendResult(False, None, message)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return SendResult(True, None, f"{type(exc).__name__}: {exc}".rstrip(": "))

    async def close(self) -> None:
        await self._session.close()
