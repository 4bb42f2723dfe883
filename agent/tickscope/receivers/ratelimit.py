"""Client mistakes logged at most once per interval per reason.

A client that disconnects mid-body or stalls is not a server error: it is counted
(tickscope_receiver_rejected_requests_total{reason}) every time, and logged as one
WARNING line without a traceback, carrying how many happened since the last line,
so a misbehaving client cannot fill the logs.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

__all__ = ["RateLimitedLog"]


class RateLimitedLog:
    def __init__(
        self,
        logger: logging.Logger,
        interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._logger = logger
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, reason: str, message: str, **extra: object) -> bool:
        """Log `message` unless `reason` was logged within the interval; True if logged."""
        now = self._clock()
        last = self._last.get(reason)
        if last is not None and now - last < self._interval:
            self._suppressed[reason] = self._suppressed.get(reason, 0) + 1
            return False
        self._last[reason] = now
        suppressed = self._suppressed.pop(reason, 0)
        self._logger.warning(
            message, extra={"reason": reason, "suppressed_since_last": suppressed, **extra}
        )
        return True
