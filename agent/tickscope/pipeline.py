"""The bounded queue between the OTLP receivers and the span consumers.

Receivers decode and validate a request, then offer it here. The queue counts
its size in spans; a request that does not fit is refused at once (the receiver
answers 429 / RESOURCE_EXHAUSTED with a retry delay), so a receiver never waits
on it and the event loop never blocks. One consumer task drains the queue: the
span metrics and trading metrics (SpanStream), then the upstream forwarder,
which has its own buffer.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge

from tickscope.core.consumer import TraceBatch
from tickscope.core.queue import BoundedQueue

# The pipeline processes queued batches for up to this long per turn of the event
# loop, then lets the receivers run. One batch per turn (before) let bursts fill the
# queue: four gRPC connections accepted up to four batches in one turn, and 13% of
# calls were refused RESOURCE_EXHAUSTED with the CPU 17% idle. At 5 ms (4 conns,
# 512-span batches, same run): OTLP/HTTP 16.0% -> 17.2% of the decode-only ceiling,
# 16 conns 12.2% -> 16.1% (429s 3,392 -> 75), gRPC 11.6% -> 14.4% (refusals 389 -> 0);
# 2 ms gave 16.5%, 15.4% (2,082 429s) and 14.6%. p99 latency at 16 connections went
# from 12 to 30 ms; the loop is never held longer than one batch past the turn.
_TURN_SECONDS = 0.005

__all__ = ["Consumer", "Pipeline", "RateMeter"]

log = logging.getLogger("tickscope.pipeline")


class RateMeter:
    """Spans per second over the last ~10 seconds, for the status page."""

    def __init__(self, window: float = 10.0) -> None:
        self.window = window
        self.total = 0
        self._marks: collections.deque[tuple[float, int]] = collections.deque()

    def add(self, count: int) -> None:
        now = time.monotonic()
        if not self._marks or now - self._marks[-1][0] >= 1.0:
            # A mark is (time, total before that time's spans).
            self._marks.append((now, self.total))
            while len(self._marks) > 2 and now - self._marks[1][0] >= self.window:
                self._marks.popleft()
        self.total += count

    def rate(self) -> float:
        if not self._marks:
            return 0.0
        since, base = self._marks[0]
        # At least a second, so that one batch just in does not read as a burst.
        elapsed = max(1.0, time.monotonic() - since)
        return (self.total - base) / elapsed


Consumer = Callable[[TraceBatch], None]


class Pipeline:
    """The bounded queue and its consumer task: a component (start/stop)."""

    name = "pipeline"

    def __init__(
        self,
        capacity_spans: int,
        registry: CollectorRegistry,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.capacity = capacity_spans
        self._clock = clock
        # An empty queue takes any one batch, so that a request larger than the
        # whole capacity is not refused forever (the body limit bounds it).
        self._queue: BoundedQueue[TraceBatch] = BoundedQueue(
            capacity_spans, admit_oversized_when_empty=True
        )
        self._consumers: list[tuple[str, Consumer]] = []
        self._task: asyncio.Task[None] | None = None
        self.processed = RateMeter()
        Gauge(
            "tickscope_pipeline_queue_spans",
            "Spans accepted and waiting to be processed.",
            registry=registry,
        ).set_function(lambda: self._queue.units)
        Gauge(
            "tickscope_pipeline_queue_capacity_spans",
            "Capacity of the pipeline queue (limits.queue_capacity_spans).",
            registry=registry,
        ).set(capacity_spans)
        self.dropped = Counter(
            "tickscope_pipeline_dropped_spans_total",
            "Spans accepted but never processed, by reason (shutdown).",
            ["reason"],
            registry=registry,
        )
        self.dropped.labels("shutdown")
        self.consumer_errors = Counter(
            "tickscope_pipeline_consumer_errors_total",
            "Batches a consumer (span_metrics, forward) failed on; the others still got them.",
            ["consumer"],
            registry=registry,
        )
        self.processed_total = Counter(
            "tickscope_pipeline_processed_spans_total",
            "Spans taken off the queue and handed to the consumers.",
            registry=registry,
        )

    def add_consumer(self, name: str, consumer: Consumer) -> None:
        self._consumers.append((name, consumer))
        self.consumer_errors.labels(name)

    @property
    def queued_spans(self) -> int:
        return self._queue.units

    def is_full(self) -> bool:
        return self._queue.is_full()

    def offer(self, batch: TraceBatch) -> bool:
        """Queue `batch` if it fits; False (and nothing queued) if it does not."""
        return self._queue.offer(batch, batch.spans)

    async def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="pipeline")

    async def stop(self, grace: float) -> None:
        """Process what is queued, for up to `grace` seconds; count the rest dropped."""
        if self._queue and self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace):
                    await self._queue.drained()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        left = self._queue.clear()
        if left:
            self.dropped.labels("shutdown").inc(left)
            log.warning("spans dropped at shutdown", extra={"spans": left})

    async def _run(self) -> None:
        clock = self._clock
        while True:
            await self._queue.wait()
            turn = clock() + _TURN_SECONDS
            while self._queue:
                batch, _ = self._queue.pop()
                self.process(batch)
                if clock() >= turn:
                    break
            # Let the receivers run between turns: under load the queue fills
            # and they answer with backpressure instead of waiting.
            await asyncio.sleep(0)

    def process(self, batch: TraceBatch) -> None:
        for name, consumer in self._consumers:
            try:
                consumer(batch)
            except Exception:
                self.consumer_errors.labels(name).inc()
                log.exception("consumer failed on a batch", extra={"consumer": name})
        self.processed.add(batch.spans)
        self.processed_total.inc(batch.spans)
