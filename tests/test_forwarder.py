"""The forwarder in-process: a local OTLP/HTTP sink as the upstream, a fake clock for
the retries (every backoff is recorded, none is slept), a fixed jitter, exact counts.

tests/test_forward.py drives a whole sidecar process against the same sinks; this
file is the fast layer below it, where each retry decision can be checked exactly.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse
from prometheus_client import CollectorRegistry

from helpers.otlp import many, request
from helpers.otlp_sink import Answer, HTTPSink, count_spans
from tickscope.exporters.forward import ForwardConfig, Forwarder
from tickscope.exporters.forward.retry import RetryPolicy, retry_after


def in_loop(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test in a fresh event loop (the forwarder binds to the running one)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


class FakeClock:
    """Monotonic time that moves only when the forwarder sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def payload(spans: int, service: str = "svc") -> bytes:
    return request(service, many("op", spans)).SerializeToString()


def partial(rejected: int) -> bytes:
    response = ExportTraceServiceResponse()
    response.partial_success.rejected_spans = rejected
    response.partial_success.error_message = "told to reject"
    return response.SerializeToString()


class Setup:
    def __init__(self, answers: Callable[[int], Answer], **config: object) -> None:
        self.sink = HTTPSink(answer=answers).start()
        self.clock = FakeClock()
        self.registry = CollectorRegistry()
        self.config = ForwardConfig.model_validate(
            {
                "enabled": True,
                "endpoint": f"http://127.0.0.1:{self.sink.port}",
                "batch_timeout": 0.01,
                **config,
            }
        )
        self.forwarder = Forwarder(
            self.config,
            self.registry,
            clock=self.clock,
            retry=RetryPolicy(self.config.retry, jitter=lambda: 1.0),
        )

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    async def settle(self, spans: int) -> None:
        """Until `spans` spans are accounted for (sent, failed or dropped)."""
        for _ in range(500):
            total = sum(
                self.value(name) or 0.0
                for name in (
                    "tickscope_forward_sent_spans_total",
                    "tickscope_forward_failed_spans_total",
                )
            )
            if total >= spans:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{spans} spans not accounted for")

    async def close(self) -> None:
        await self.forwarder.stop(grace=1.0)
        self.sink.stop()


def answers(*sequence: Answer) -> Callable[[int], Answer]:
    """The n-th request gets the n-th answer; the last one repeats."""
    return lambda n: sequence[min(n, len(sequence)) - 1]


UNAVAILABLE = Answer(status=503)


@pytest.mark.parametrize(
    ("sequence", "config", "sleeps", "sent", "failed", "requests"),
    [
        # Backoff doubles from initial_interval: 1 s, 2 s, then the third try lands.
        ((UNAVAILABLE, UNAVAILABLE, Answer()), {}, [1.0, 2.0], 10, 0, 3),
        # Retry-After longer than the backoff wins; a shorter one does not.
        (
            (Answer(503, {"Retry-After": "7"}), Answer(429, {"Retry-After": "1"}), Answer()),
            {"retry": {"initial_interval": "3s"}},
            [7.0, 6.0],
            10,
            0,
            3,
        ),
        # max_interval caps the doubling: 1, 2, 4, 4, 4.
        (
            (*[UNAVAILABLE] * 5, Answer()),
            {"retry": {"max_interval": "4s"}},
            [1.0, 2.0, 4.0, 4.0, 4.0],
            10,
            0,
            6,
        ),
        # Retries stop once the next wait would pass max_elapsed (1 + 2 + 4 > 5):
        # the batch is failed, never sent.
        ((UNAVAILABLE,), {"retry": {"max_elapsed": "5s"}}, [1.0, 2.0], 0, 10, 3),
        # Not retryable: failed at once.
        ((Answer(400),), {}, [], 0, 10, 1),
        # Partial success: the rejected spans failed, the others sent.
        ((Answer(body=partial(3)),), {}, [], 7, 3, 1),
        # An upstream claiming more rejections than spans sent fails them all, no more.
        ((Answer(body=partial(50)),), {}, [], 0, 10, 1),
    ],
)
@in_loop
async def test_retry_schedule_and_accounting(
    sequence: tuple[Answer, ...],
    config: dict[str, object],
    sleeps: list[float],
    sent: int,
    failed: int,
    requests: int,
) -> None:
    setup = Setup(answers(*sequence), **config)
    try:
        await setup.forwarder.start()
        body = payload(10)
        assert setup.forwarder.offer(body, 10)
        await setup.settle(10)
        assert setup.clock.sleeps == sleeps
        assert setup.value("tickscope_forward_sent_spans_total") == sent
        assert setup.value("tickscope_forward_failed_spans_total") == failed
        assert len(setup.sink.received) == requests
        # Each retry sends the same bytes again.
        assert {r.body for r in setup.sink.received} == {body}
    finally:
        await setup.close()


@in_loop
async def test_buffer_full_drops_the_newest_and_counts_them() -> None:
    setup = Setup(answers(Answer()), buffer_spans=10)
    try:
        # Not started yet: nothing drains the buffer.
        assert setup.forwarder.offer(payload(6, "a"), 6)
        assert not setup.forwarder.offer(payload(6, "b"), 6)
        assert setup.forwarder.offer(payload(4, "c"), 4)
        assert setup.value("tickscope_forward_dropped_spans_total", reason="buffer_full") == 6
        assert setup.value("tickscope_forward_buffer_spans") == 10
        await setup.forwarder.start()
        await setup.settle(10)
        assert setup.value("tickscope_forward_sent_spans_total") == 10
        assert setup.value("tickscope_forward_buffer_spans") == 0
        services = sorted(
            rs.resource.attributes[0].value.string_value
            for r in setup.sink.requests()
            for rs in r.resource_spans
        )
        assert services == ["a", "c"]
    finally:
        await setup.close()


@pytest.mark.parametrize(
    ("max_batch_spans", "offered", "batches"),
    [
        # Requests concatenate into one while they fit...
        (6, [3, 3, 3], [6, 3]),
        (9, [3, 3, 3], [9]),
        # ... and one larger than the limit goes alone, never split.
        (4, [3, 8, 1], [3, 8, 1]),
        (4, [1, 2, 1, 5], [4, 5]),
    ],
)
@in_loop
async def test_batching_by_spans(
    max_batch_spans: int, offered: list[int], batches: list[int]
) -> None:
    setup = Setup(answers(Answer()), max_batch_spans=max_batch_spans)
    try:
        for i, spans in enumerate(offered):
            assert setup.forwarder.offer(payload(spans, f"s{i}"), spans)
        await setup.forwarder.start()
        await setup.settle(sum(offered))
        assert [count_spans(r) for r in setup.sink.requests()] == batches
        assert setup.clock.sleeps == []
    finally:
        await setup.close()


@in_loop
async def test_batching_by_bytes() -> None:
    one = payload(2)
    setup = Setup(answers(Answer()), max_batch_bytes=2 * len(one) + 1)
    try:
        for _ in range(5):
            setup.forwarder.offer(one, 2)
        await setup.forwarder.start()
        await setup.settle(10)
        assert [len(r.body) for r in setup.sink.received] == [2 * len(one), 2 * len(one), len(one)]
    finally:
        await setup.close()


async def _in_flight(setup: Setup, spans: int, then_buffered: int) -> None:
    """Start the forwarder, put a batch of `spans` on the wire (the sink has it), and
    `then_buffered` spans behind it."""
    await setup.forwarder.start()
    setup.forwarder.offer(payload(spans), spans)
    for _ in range(500):
        if setup.sink.received:
            break
        await asyncio.sleep(0.01)
    assert len(setup.sink.received) == 1
    if then_buffered:
        setup.forwarder.offer(payload(then_buffered), then_buffered)


def _accounted(setup: Setup) -> dict[str, float | None]:
    return {
        "sent": setup.value("tickscope_forward_sent_spans_total"),
        "failed": setup.value("tickscope_forward_failed_spans_total"),
        "shutdown": setup.value("tickscope_forward_dropped_spans_total", reason="shutdown"),
        "unacknowledged": setup.value(
            "tickscope_forward_dropped_spans_total", reason="unacknowledged"
        ),
    }


@in_loop
async def test_shutdown_a_hung_upstream_unacknowledged_and_never_sent() -> None:
    # The batch on the wire gets no answer: the upstream may have it (unacknowledged);
    # the one behind it was never sent (shutdown). Counted once each.
    setup = Setup(answers(Answer(delay=5.0)), max_batch_spans=5)
    try:
        await _in_flight(setup, 5, 3)
    finally:
        await setup.forwarder.stop(grace=0.2)
        setup.sink.stop()
    assert _accounted(setup) == {"sent": 0, "failed": 0, "shutdown": 3, "unacknowledged": 5}


@in_loop
async def test_shutdown_a_batch_answered_after_the_grace_is_unacknowledged_not_lost() -> None:
    # Issue 11, defect 18. The upstream answers each request 0.7 s after it arrives;
    # the grace is 1.2 s (flush time 0.9 s). The first batch is answered at 0.7 s
    # (sent); the second goes out at 0.7 s, the upstream receives it, and its answer
    # would come at 1.4 s, after the grace. It was counted dropped "shutdown", as if
    # never sent; it is counted "unacknowledged": the upstream may have it.
    setup = Setup(answers(Answer(delay=0.7)), max_batch_spans=5)
    try:
        await _in_flight(setup, 5, 4)
    finally:
        await setup.forwarder.stop(grace=1.2)
        setup.sink.stop()
    assert len(setup.sink.received) == 2
    assert _accounted(setup) == {"sent": 5, "failed": 0, "shutdown": 0, "unacknowledged": 4}


@in_loop
async def test_shutdown_waits_for_the_answer_to_the_batch_on_the_wire() -> None:
    # Answered after the flush time (3/4 of 0.8 s) but within the grace: sent.
    setup = Setup(answers(Answer(delay=0.7)), max_batch_spans=5)
    try:
        await _in_flight(setup, 5, 0)
    finally:
        await setup.forwarder.stop(grace=0.8)
        setup.sink.stop()
    assert _accounted(setup) == {"sent": 5, "failed": 0, "shutdown": 0, "unacknowledged": 0}


@in_loop
async def test_shutdown_does_not_retry() -> None:
    # A batch the upstream refuses retryably after the flush time (3/4 of 0.6 s) is not
    # retried: never delivered, counted dropped (shutdown), once.
    setup = Setup(answers(Answer(status=503, delay=0.5)), max_batch_spans=5)
    try:
        await _in_flight(setup, 5, 0)
    finally:
        await setup.forwarder.stop(grace=0.6)
        setup.sink.stop()
    assert _accounted(setup) == {"sent": 0, "failed": 0, "shutdown": 5, "unacknowledged": 0}
    assert len(setup.sink.received) == 1


@pytest.mark.parametrize(
    ("attempt", "hint", "delay"),
    [(0, None, 1.0), (1, None, 2.0), (4, None, 16.0), (5, None, 30.0), (9, None, 30.0),
     (0, 5.0, 5.0), (3, 5.0, 8.0), (6, 45.0, 45.0)],
)  # fmt: skip
def test_backoff_table(attempt: int, hint: float | None, delay: float) -> None:
    config = ForwardConfig().retry  # initial 1 s, max 30 s
    assert RetryPolicy(config, jitter=lambda: 1.0).delay(attempt, hint) == delay


def test_jitter_scales_the_backoff_not_the_hint() -> None:
    config = ForwardConfig().retry
    assert RetryPolicy(config, jitter=lambda: 0.8).delay(2, None) == pytest.approx(3.2)
    assert RetryPolicy(config, jitter=lambda: 1.2).delay(2, None) == pytest.approx(4.8)
    assert RetryPolicy(config, jitter=lambda: 0.8).delay(0, 2.0) == 2.0


@pytest.mark.parametrize(
    ("header", "seconds"),
    [
        ("7", 7.0),
        (" 120 ", 120.0),
        # An HTTP date 30 s after the fake now (Sun, 06 Nov 1994 08:49:37 GMT).
        ("Sun, 06 Nov 1994 08:50:07 GMT", 30.0),
        # A date in the past means "now".
        ("Sun, 06 Nov 1994 08:40:00 GMT", 0.0),
        ("", None),
        (None, None),
        ("soon", None),
        ("-5", None),
    ],
)
def test_retry_after_header(header: str | None, seconds: float | None) -> None:
    assert retry_after(header, now=lambda: 784111777.0) == seconds
