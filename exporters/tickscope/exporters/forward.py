"""Upstream forwarding: received spans, unchanged, to an OTLP endpoint (a Collector,
Tempo, Jaeger), over OTLP/HTTP or OTLP/gRPC.

The forwarder has its own bounded buffer (in spans), fed by the pipeline after
aggregation; when it is full, new spans are dropped and counted, so a dead
upstream never slows the receivers or the span metrics. A sender task batches
buffered requests (serialized ExportTraceServiceRequests concatenate into one
valid request: repeated fields append), sends them, and retries what failed with
a retryable code (HTTP 429/502/503/504, gRPC UNAVAILABLE, RESOURCE_EXHAUSTED,
...) with exponential backoff and jitter, honouring Retry-After / RetryInfo,
until retry.max_elapsed. Spans end up counted exactly once, as sent, failed
(the upstream refused them for good, or retries ran out) or dropped (buffer
full, or still buffered at shutdown).

Header values (API keys for a hosted backend) are never logged.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import datetime
import email.utils
import gzip
import logging
import random
import time
from typing import TYPE_CHECKING, Literal, Self
from urllib.parse import urlsplit

import aiohttp
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import ByteSize, Field, model_validator

from tickscope.core.configtypes import Bytes, Duration, StrictModel

if TYPE_CHECKING:
    from tickscope.exporters.forward_grpc import GrpcSender

__all__ = ["ForwardConfig", "Forwarder"]

log = logging.getLogger("tickscope.forward")

RETRYABLE_HTTP = frozenset({429, 502, 503, 504})


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


class SendResult:
    __slots__ = ("delay", "message", "rejected", "retryable")

    def __init__(
        self,
        retryable: bool = False,
        delay: float | None = None,
        message: str = "",
        rejected: int = 0,
    ) -> None:
        self.retryable = retryable
        self.delay = delay
        self.message = message
        self.rejected = rejected


OK = SendResult()


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT (RFC 9110)
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - time.time())


def _partial(body: bytes) -> SendResult:
    if not body:
        return OK
    try:
        response = ExportTraceServiceResponse.FromString(body)
    except Exception:
        return OK  # a 200 whose body is not OTLP: the spans were taken
    rejected = response.partial_success.rejected_spans
    if rejected:
        return SendResult(rejected=rejected, message=response.partial_success.error_message)
    return OK


class Forwarder:
    def __init__(self, config: ForwardConfig, registry: CollectorRegistry) -> None:
        self.config = config
        self._buffer: collections.deque[tuple[bytes, int]] = collections.deque()
        self._buffered = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()  # set whenever the buffer has been emptied
        self._flush = asyncio.Event()  # set at shutdown: send now, do not wait to batch
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._grpc: GrpcSender | None = None
        self._last_log = 0.0
        self._in_flight = 0
        self.sent = Counter(
            "tickscope_forward_sent_spans_total",
            "Spans the upstream accepted.",
            registry=registry,
        )
        self.failed = Counter(
            "tickscope_forward_failed_spans_total",
            "Spans the upstream refused for good, or whose retries ran out.",
            registry=registry,
        )
        self.dropped = Counter(
            "tickscope_forward_dropped_spans_total",
            "Spans never sent: the forward buffer was full (buffer_full), still held at "
            "shutdown (shutdown), or held an attribute that does not decode (invalid).",
            ["reason"],
            registry=registry,
        )
        for reason in ("buffer_full", "shutdown", "invalid"):
            self.dropped.labels(reason)
        Gauge(
            "tickscope_forward_buffer_spans",
            "Spans waiting to be sent upstream, the batch being sent included.",
            registry=registry,
        ).set_function(lambda: self._buffered + self._in_flight)
        Gauge(
            "tickscope_forward_buffer_capacity_spans",
            "Capacity of the forward buffer (forward.buffer_spans).",
            registry=registry,
        ).set(config.buffer_spans)

    # -- fed by the pipeline --------------------------------------------------

    def drop(self, spans: int, reason: str) -> None:
        """Count spans that will not be offered at all (e.g. reason "invalid")."""
        self.dropped.labels(reason).inc(spans)

    def offer(self, payload: bytes, spans: int) -> bool:
        if self._buffered + spans > self.config.buffer_spans:
            self.dropped.labels("buffer_full").inc(spans)
            self._warn("forward buffer full; dropping spans")
            return False
        self._buffer.append((payload, spans))
        self._buffered += spans
        self._idle.clear()
        self._ready.set()
        return True

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        if self.config.protocol == "grpc":
            # grpcio costs ~9 MiB of RSS: loaded only by sidecars that use it.
            from tickscope.exporters.forward_grpc import GrpcSender

            self._grpc = GrpcSender(self.config)
        else:
            self._session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.config.timeout),
                auto_decompress=True,
            )
        self._task = asyncio.get_running_loop().create_task(self._run(), name="forwarder")
        log.info(
            "forwarding spans upstream",
            extra={"endpoint": self.config.redacted_endpoint(), "protocol": self.config.protocol},
        )

    async def stop(self, grace: float) -> None:
        """Send what is buffered for up to `grace` seconds; count the rest dropped."""
        self._flush.set()
        try:
            if (self._buffer or self._in_flight) and self._task is not None:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(grace):
                        await self._idle.wait()
        finally:
            # Counted before cancelling: the batch in flight never completes after this.
            left = self._buffered + self._in_flight
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
                self._task = None
            if left:
                self.dropped.labels("shutdown").inc(left)
                log.warning("spans not forwarded at shutdown", extra={"spans": left})
            self._buffer.clear()
            self._buffered = 0
            self._in_flight = 0
            if self._session is not None:
                await self._session.close()
            if self._grpc is not None:
                await self._grpc.close()

    # -- sending --------------------------------------------------------------

    def _take_batch(self) -> tuple[bytes, int]:
        parts: list[bytes] = []
        spans = 0
        size = 0
        limit = self.config.max_batch_bytes
        while self._buffer and (
            not parts
            or (
                spans + self._buffer[0][1] <= self.config.max_batch_spans
                and size + len(self._buffer[0][0]) <= limit
            )
        ):
            payload, count = self._buffer.popleft()
            parts.append(payload)
            spans += count
            size += len(payload)
        self._buffered -= spans
        return b"".join(parts), spans

    async def _run(self) -> None:
        while True:
            if not self._buffer:
                self._idle.set()
                self._ready.clear()
                await self._ready.wait()
            if self._buffered < self.config.max_batch_spans and not self._flush.is_set():
                # Give the batch a moment to fill: fewer, larger requests upstream
                # (cut short when shutting down).
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.config.batch_timeout):
                        await self._flush.wait()
            payload, spans = self._take_batch()
            self._in_flight = spans
            try:
                await self._deliver(payload, spans)
            except asyncio.CancelledError:
                raise  # stop() counts the batch in flight as dropped
            except Exception:
                # Whatever went wrong, the sender must live on and the spans be counted.
                self.failed.inc(spans)
                log.exception("forwarding a batch failed unexpectedly")
            self._in_flight = 0

    async def _deliver(self, payload: bytes, spans: int) -> None:
        retry = self.config.retry
        started = time.monotonic()
        attempt = 0
        body = payload
        if self.config.compression == "gzip" and self.config.protocol != "grpc":
            # zlib lets go of the GIL: compress on another core.
            body = await asyncio.to_thread(gzip.compress, payload, 1)
        while True:
            result = await self._send(body)
            if result is OK or (not result.retryable and not result.message):
                self.sent.inc(spans)
                return
            if not result.retryable:
                # An upstream may claim to have rejected more than it was sent.
                accepted = spans - min(spans, result.rejected) if result.rejected else 0
                self.sent.inc(accepted)
                self.failed.inc(spans - accepted)
                self._warn(f"upstream refused spans: {result.message}")
                return
            elapsed = time.monotonic() - started
            delay = min(retry.max_interval, retry.initial_interval * 2**attempt)
            delay *= random.uniform(0.8, 1.2)  # jitter: sidecars must not retry in step
            if result.delay is not None:
                delay = max(delay, result.delay)
            if elapsed + delay > retry.max_elapsed:
                self.failed.inc(spans)
                self._warn(
                    f"giving up on a batch after {elapsed:.0f}s of retries: {result.message}"
                )
                return
            attempt += 1
            self._warn(f"upstream export failed, retrying: {result.message}")
            await asyncio.sleep(delay)

    async def _send(self, body: bytes) -> SendResult:
        if self._grpc is not None:
            return await self._grpc.send(body)
        return await self._send_http(body)

    async def _send_http(self, body: bytes) -> SendResult:
        assert self._session is not None
        headers = {"Content-Type": "application/x-protobuf", **self.config.headers}
        if self.config.compression == "gzip":
            headers["Content-Encoding"] = "gzip"
        try:
            async with self._session.post(self.config.http_url(), data=body, headers=headers) as r:
                content = await r.read()
                if r.status == 200:
                    result = _partial(content)
                    if result.rejected:
                        return SendResult(
                            False, None, result.message or "partial success", result.rejected
                        )
                    return OK
                message = f"HTTP {r.status}"
                if r.status in RETRYABLE_HTTP:
                    return SendResult(True, _retry_after(r.headers.get("Retry-After")), message)
                return SendResult(False, None, message, rejected=0)
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            return SendResult(True, None, f"{type(exc).__name__}: {exc}".rstrip(": "))

    def _warn(self, message: str) -> None:
        now = time.monotonic()
        if now - self._last_log >= 10.0:  # a dead upstream must not flood the log
            self._last_log = now
            log.warning(message, extra={"endpoint": self.config.redacted_endpoint()})
