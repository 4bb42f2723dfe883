"""Rate-limit use from exchange response headers.

Exchanges report how much of their request budget a client has used in
different headers; these are parsed into `trading.ratelimit.used` and
`trading.ratelimit.limit`, from which the sidecar computes
exchange_rate_limit_used_ratio. Where an exchange sends only the used figure
(Binance's used weight), the limit comes from `LIMITS` or the engine's own
setting (`configure(rate_limits={"binance": 6000})`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["LIMITS", "parse_rate_limit", "reader_for"]

# Request-weight budgets per minute, where the exchange's headers do not carry them.
LIMITS: dict[str, float] = {
    # Binance spot: REQUEST_WEIGHT 6000 per minute (GET /api/v3/exchangeInfo rateLimits).
    "binance": 6000.0,
    "binanceus": 1200.0,
}


_NUMBERS: dict[Any, float | None] = {}


def _number(value: Any) -> float | None:
    """A header's number ("1200", "1200, 60"), cached: the same values recur."""
    if value is None:
        return None
    try:
        return _NUMBERS[value]
    except (KeyError, TypeError):
        pass
    try:
        number: float | None = float(str(value).split(",")[0].strip())
    except ValueError:
        number = None
    if number is not None and number < 0:
        number = None
    if len(_NUMBERS) > 4096:
        _NUMBERS.clear()
    with contextlib.suppress(TypeError):  # an unhashable header value is not kept
        _NUMBERS[value] = number
    return number


def _binance(headers: Mapping[str, str], limit: float | None) -> tuple[float, float] | None:
    # x-mbx-used-weight-1m: weight used in the current minute (spot); the futures
    # APIs send the same header. No limit header: use the known budget.
    used = _number(headers.get("x-mbx-used-weight-1m") or headers.get("x-mbx-used-weight"))
    if used is None or not limit:
        return None
    return used, limit


def _limit_remaining(
    limit_header: str, remaining_header: str
) -> Callable[..., tuple[float, float] | None]:
    def parse(headers: Mapping[str, str], _: float | None) -> tuple[float, float] | None:
        limit = _number(headers.get(limit_header))
        remaining = _number(headers.get(remaining_header))
        if not limit or remaining is None:
            return None
        return max(0.0, limit - remaining), limit

    return parse


def _used_limit(used_header: str, limit_header: str) -> Callable[..., tuple[float, float] | None]:
    def parse(headers: Mapping[str, str], _: float | None) -> tuple[float, float] | None:
        used = _number(headers.get(used_header))
        limit = _number(headers.get(limit_header))
        if used is None or not limit:
            return None
        return used, limit

    return parse


# Exchange id -> parser. Headers are looked up case-insensitively (requests and
# aiohttp both give case-insensitive mappings).
_PARSERS: dict[str, Callable[..., tuple[float, float] | None]] = {
    "binance": _binance,
    "binanceus": _binance,
    "binanceusdm": _binance,
    "binancecoinm": _binance,
    "bybit": _limit_remaining("X-Bapi-Limit", "X-Bapi-Limit-Status"),
    "kucoin": _limit_remaining("gw-ratelimit-limit", "gw-ratelimit-remaining"),
    "kucoinfutures": _limit_remaining("gw-ratelimit-limit", "gw-ratelimit-remaining"),
    "gate": _limit_remaining("x-gate-ratelimit-limit", "x-gate-ratelimit-requests-remain"),
}
# Widely used generic headers (draft-ietf-httpapi-ratelimit-headers and the older X- form).
_GENERIC = (
    _limit_remaining("x-ratelimit-limit", "x-ratelimit-remaining"),
    _limit_remaining("ratelimit-limit", "ratelimit-remaining"),
)


Reader = Callable[[Mapping[str, str]], "tuple[float, float] | None"]


def reader_for(exchange_id: str, limits: Mapping[str, float] | None = None) -> Reader:
    """parse_rate_limit for one exchange, with its parser and limit looked up once."""
    limit = (limits or {}).get(exchange_id, LIMITS.get(exchange_id))
    parser = _PARSERS.get(exchange_id)

    def read(headers: Mapping[str, str]) -> tuple[float, float] | None:
        try:
            if parser is not None:
                found = parser(headers, limit)
                if found is not None:
                    return found
            for generic in _GENERIC:
                found = generic(headers, limit)
                if found is not None:
                    return found
        except Exception:  # a header in an unexpected shape must never break a call
            return None
        return None

    return read


def parse_rate_limit(
    exchange_id: str, headers: Mapping[str, str] | None, limits: Mapping[str, float] | None = None
) -> tuple[float, float] | None:
    """(used, limit) from a response's headers, or None if they say nothing."""
    if not headers:
        return None
    return reader_for(exchange_id, limits)(headers)
