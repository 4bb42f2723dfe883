"""A ccxt.pro watch method called in a loop, as an engine's loop calls it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import ccxt


class Watcher:
    """Calls a watch method in a loop, recording every return and every error with
    the time it came (`clock`: wall time by default), and calling again after an
    error, as ccxt.pro reconnects then."""

    def __init__(
        self, call: Callable[[], Awaitable[Any]], clock: Callable[[], float] = time.time
    ) -> None:
        self.results: list[tuple[float, Any]] = []
        self.errors: list[tuple[float, BaseException]] = []
        self._call = call
        self._clock = clock
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            try:
                result = await self._call()
            except ccxt.BaseError as exc:
                self.errors.append((self._clock(), exc))
                await asyncio.sleep(0.01)
            else:
                self.results.append((self._clock(), result))

    @property
    def count(self) -> int:
        return len(self.results)

    async def stop(self) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
