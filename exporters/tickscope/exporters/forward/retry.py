"""When to retry an export, and how long to wait: exponential backoff with
jitter, at least as long as the upstream asked (Retry-After, RetryInfo), until
`max_elapsed` has passed since the first attempt. Pure: the random draw and the
wall clock are passed in, so tests give exact delays."""

from __future__ import annotations

import datetime
import email.utils
import random
import time
from collections.abc import Callable

from tickscope.exporters.forward.config import RetryConfig

__all__ = ["RetryPolicy", "retry_after"]


def _jitter() -> float:
    return random.uniform(0.8, 1.2)


class RetryPolicy:
    def __init__(self, config: RetryConfig, jitter: Callable[[], float] = _jitter) -> None:
        self.config = config
        # Sidecars must not retry in step: each delay is scaled by a draw in [0.8, 1.2].
        self._jitter = jitter

    def delay(self, attempt: int, hint: float | None) -> float:
        """The wait before retry number `attempt + 1` (attempt 0 is the first retry)."""
        config = self.config
        delay = min(config.max_interval, config.initial_interval * 2.0**attempt) * self._jitter()
        return delay if hint is None else max(delay, hint)

    def gives_up(self, elapsed: float, delay: float) -> bool:
        """Whether waiting `delay` more would pass max_elapsed since the first attempt."""
        return elapsed + delay > self.config.max_elapsed


def retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds from a Retry-After header: delay-seconds or an HTTP date (RFC 9110)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=datetime.UTC)
    return max(0.0, when.timestamp() - now())
