"""One bounded FIFO for the pipeline's queue and the forwarder's buffer.

Items carry a size in units (spans): the bound is on units, not on items, because
a request may hold one span or thousands. `offer` never waits: an item that does
not fit is refused at once and the caller answers for it (429 to a client, a
counted drop), so nobody upstream ever blocks on a full queue.

One task drains a queue: it calls `wait` for items and `pop`s them; the queue is
*idle* once that task finds it empty again, i.e. everything taken has also been
handled, which is what shutdown waits for (`drained`).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Generic, TypeVar

__all__ = ["BoundedQueue"]

T = TypeVar("T")


class BoundedQueue(Generic[T]):
    def __init__(self, capacity: int, *, admit_oversized_when_empty: bool = False) -> None:
        """`admit_oversized_when_empty`: an empty queue takes any one item, so that
        one larger than the whole capacity is not refused forever (the pipeline:
        the request body limit bounds it). Otherwise an item must fit."""
        self.capacity = capacity
        self._admit_oversized = admit_oversized_when_empty
        self._items: collections.deque[tuple[T, int]] = collections.deque()
        self._units = 0
        self._ready = asyncio.Event()
        self._idle = asyncio.Event()

    @property
    def units(self) -> int:
        """Units queued (spans)."""
        return self._units

    def __len__(self) -> int:
        return len(self._items)

    def __bool__(self) -> bool:
        return bool(self._items)

    def is_full(self) -> bool:
        return self._units >= self.capacity

    def offer(self, item: T, units: int) -> bool:
        """Queue `item` if it fits; False (and nothing queued) if it does not."""
        if self._units + units > self.capacity and (self._items or not self._admit_oversized):
            return False
        self._items.append((item, units))
        self._units += units
        self._idle.clear()
        self._ready.set()
        return True

    def peek(self) -> tuple[T, int]:
        return self._items[0]

    def pop(self) -> tuple[T, int]:
        item = self._items.popleft()
        self._units -= item[1]
        return item

    def clear(self) -> int:
        """Drop everything queued; returns the units dropped."""
        units = self._units
        self._items.clear()
        self._units = 0
        return units

    async def wait(self) -> None:
        """Until an item is queued. Finding the queue empty marks it idle: the
        draining task has handled everything it took."""
        if not self._items:
            self._idle.set()
            self._ready.clear()
            await self._ready.wait()

    async def drained(self) -> None:
        """Until the draining task has found the queue empty."""
        await self._idle.wait()
