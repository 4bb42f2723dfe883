"""The pipeline's turns: queued batches are processed until the turn's 5 ms are used,
then the receivers get the loop (an injected clock: each batch 'takes' a set time)."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from tickscope.core.consumer import TraceBatch
from tickscope.pipeline import Pipeline


@pytest.mark.parametrize(
    ("batch_ms", "queued", "turns"),
    [
        # (ms one batch takes, batches queued at once, batches processed in each turn)
        (1.0, 12, [5, 5, 2]),  # 5 ms a turn: the 5th batch ends the turn
        (2.0, 6, [3, 3]),  # 2, 4: under 5 ms; 6: over, the turn ends after the 3rd
        (7.0, 3, [1, 1, 1]),  # a batch longer than a turn: one per turn
        (0.1, 20, [20]),  # all fit in one turn
    ],
)
def test_batches_per_turn(batch_ms: float, queued: int, turns: list[int]) -> None:
    now = [0.0]
    seen: list[int] = []

    async def main() -> None:
        pipeline = Pipeline(10_000, CollectorRegistry(), clock=lambda: now[0])
        turn = [0]

        def consume(batch: TraceBatch) -> None:
            now[0] += batch_ms / 1000
            seen.append(turn[0])

        pipeline.add_consumer("test", consume)
        for _ in range(queued):
            assert pipeline.offer(TraceBatch(b"", 1, "test", None))
        await pipeline.start()
        # Count the loop turns the pipeline gives back: one per sleep(0) of this task.
        while len(seen) < queued:
            turn[0] += 1
            await asyncio.sleep(0)
        await pipeline.stop(grace=1)

    asyncio.run(main())
    per_turn = [seen.count(t) for t in sorted(set(seen))]
    assert per_turn == turns
