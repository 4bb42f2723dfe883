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
import contextlib
import gzip
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

from tickscope.core.clock import SYSTEM_CLOCK, Clock
from tickscope.core.queue import BoundedQueue
from tickscope.exporters.forward.config import ForwardConfig
from tickscope.exporters.forward.retry import RetryPolicy
from tickscope.exporters.forward.sender import OK, Sender

__all__ = ["Forwarder", "default_sender"]

log = logging.getLogger("tickscope.forward")


async def _wait_for(event: Coroutine[Any, Any, None], seconds: float) -> None:
    """Await `event` for up to `seconds` (none left: not at all)."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(max(0.0, seconds)):
            await event


def default_sender(config: ForwardConfig) -> Sender:
    """The sender for the configured protocol (called in the running loop)."""
    if config.protocol == "grpc":
        # grpcio costs ~9 MiB of RSS: loaded only by sidecars that use it.
        from tickscope.exporters.forward.grpc import GrpcSender

        return GrpcSender(config)
    from tickscope.exporters.forward.http import HttpSender

    return HttpSender(config)


class Forwarder:
    """A component (start/stop), fed by the pipeline's forward consumer.

    `sender` makes the Sender at start (default: by protocol); `clock` times the
    retries and `retry` decides them, so that tests run a dead upstream's whole
    backoff schedule in no time with exact delays."""

    name = "forwarder"

    def __init__(
        self,
        config: ForwardConfig,
        registry: CollectorRegistry,
        *,
        sender: Callable[[ForwardConfig], Sender] = default_sender,
        clock: Clock = SYSTEM_CLOCK,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.config = config
        self._buffer: BoundedQueue[bytes] = BoundedQueue(config.buffer_spans)
        self._flush = asyncio.Event()  # set at shutdown: send now, do not wait to batch
        self._task: asyncio.Task[None] | None = None
        self._make_sender = sender
        self._sender: Sender | None = None
        self._clock = clock
        self._retry = retry or RetryPolicy(config.retry)
        self._last_log = float("-inf")
        self._sending = False  # a request is on the wire, its answer not yet in
        self._closing = False  # stop()'s flush time is over: no new attempts
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
            "Spans not delivered: the forward buffer was full (buffer_full), still held or "
            "waiting for a retry at shutdown (shutdown), sent with no answer before shutdown "
            "(unacknowledged: the upstream may have them), or held an attribute that does "
            "not decode (invalid).",
            ["reason"],
            registry=registry,
        )
        for reason in ("buffer_full", "shutdown", "unacknowledged", "invalid"):
            self.dropped.labels(reason)
        Gauge(
            "tickscope_forward_buffer_spans",
            "Spans waiting to be sent upstream, the batch being sent included.",
            registry=registry,
        ).set_function(lambda: self._buffer.units + self._in_flight)
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
        if not self._buffer.offer(payload, spans):
            self.dropped.labels("buffer_full").inc(spans)
            self._warn("forward buffer full; dropping spans")
            return False
        return True

    # -- lifecycle ------------------------------------------------------------

    async def start(self) -> None:
        self._sender = self._make_sender(self.config)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="forwarder")
        log.info(
            "forwarding spans upstream",
            extra={"endpoint": self.config.redacted_endpoint(), "protocol": self.config.protocol},
        )

    async def stop(self, grace: float) -> None:
        """Send what is buffered for up to `grace` seconds, then count the rest.

        Three quarters of the grace go to flushing the buffer. What is still buffered
        then was never sent: dropped, reason shutdown. A request already on the wire
        gets the rest of the grace to be answered and is counted as the answer says
        (sent or failed); one still unanswered is cancelled and counted dropped with
        reason unacknowledged, because the upstream may well have it (a batch of 8,192
        spans was once counted dropped though the upstream had received it). A batch
        waiting to be retried is not retried any more: dropped, reason shutdown.
        Every span is counted once.
        """
        self._flush.set()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        try:
            if (self._buffer or self._in_flight) and self._task is not None:
                await _wait_for(self._buffer.drained(), grace * 0.75)
            if self._task is not None and (self._buffer or self._in_flight):
                self._closing = True
                never_sent = self._buffer.clear()
                if never_sent:
                    self.dropped.labels("shutdown").inc(never_sent)
                    log.warning("spans not forwarded at shutdown", extra={"spans": never_sent})
                if self._sending:
                    # The task finds the buffer empty once the answer is in: drained.
                    await _wait_for(self._buffer.drained(), deadline - loop.time())
        finally:
            if self._task is not None:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await self._task
                self._task = None
            if self._in_flight:
                reason = "unacknowledged" if self._sending else "shutdown"
                self.dropped.labels(reason).inc(self._in_flight)
                log.warning(
                    "spans not forwarded at shutdown",
                    extra={"spans": self._in_flight, "reason": reason},
                )
                self._in_flight = 0
            left = self._buffer.clear()
            if left:
                self.dropped.labels("shutdown").inc(left)
            if self._sender is not None:
                await self._sender.close()

    # -- sending --------------------------------------------------------------

    def _take_batch(self) -> tuple[bytes, int]:
        """Buffered requests joined into one (repeated fields append), up to
        max_batch_spans and max_batch_bytes; a request larger than those goes alone."""
        parts: list[bytes] = []
        spans = 0
        size = 0
        buffer, config = self._buffer, self.config
        while buffer:
            payload, count = buffer.peek()
            if parts and (
                spans + count > config.max_batch_spans
                or size + len(payload) > config.max_batch_bytes
            ):
                break
            buffer.pop()
            parts.append(payload)
            spans += count
            size += len(payload)
        return b"".join(parts), spans

    async def _run(self) -> None:
        while True:
            await self._buffer.wait()
            if self._buffer.units < self.config.max_batch_spans and not self._flush.is_set():
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
                raise  # stop() counts the batch in flight
            except Exception:
                # Whatever went wrong, the sender must live on and the spans be counted.
                self._sending = False
                self.failed.inc(spans)
                log.exception("forwarding a batch failed unexpectedly")
            self._in_flight = 0

    async def _deliver(self, payload: bytes, spans: int) -> None:
        assert self._sender is not None
        clock = self._clock
        started = clock.monotonic()
        attempt = 0
        body = payload
        if self.config.compression == "gzip" and self.config.protocol != "grpc":
            # zlib lets go of the GIL: compress on another core.
            body = await asyncio.to_thread(gzip.compress, payload, 1)
        while True:
            # Left True if the task is cancelled while waiting: stop() reads it to tell
            # an unanswered request (unacknowledged) from one never sent.
            self._sending = True
            result = await self._sender.send(body)
            self._sending = False
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
            if self._closing:
                # Shutting down: no more retries; the upstream does not have these.
                self.dropped.labels("shutdown").inc(spans)
                return
            elapsed = clock.monotonic() - started
            delay = self._retry.delay(attempt, result.delay)
            if self._retry.gives_up(elapsed, delay):
                self.failed.inc(spans)
                self._warn(
                    f"giving up on a batch after {elapsed:.0f}s of retries: {result.message}"
                )
                return
            attempt += 1
            self._warn(f"upstream export failed, retrying: {result.message}")
            await clock.sleep(delay)

    def _warn(self, message: str) -> None:
        now = self._clock.monotonic()
        if now - self._last_log >= 10.0:  # a dead upstream must not flood the log
            self._last_log = now
            log.warning(message, extra={"endpoint": self.config.redacted_endpoint()})
