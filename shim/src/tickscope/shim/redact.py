"""What the shim may put into telemetry, and nothing else.

The shim handles objects that hold exchange credentials (apiKey, secret,
password, uid, privateKey, walletAddress, token) and sees signed URLs and
authentication headers in flight. It never copies an argument, a URL, a header
or an exception message into a span. Every value it records is built here from
an allow-list: the exchange's id, the unified method's name, a symbol, an order
side and type, the server's host name, the HTTP method and status code, the ccxt
exception's class name, and numbers from rate-limit response headers.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

__all__ = ["ALLOWED_ATTRIBUTES", "safe_method", "safe_text", "server_address"]

# The span attributes the ccxt instrumentation writes (DESIGN.md's list).
ALLOWED_ATTRIBUTES = frozenset(
    {
        "exchange.id",
        "ccxt.method",
        "trading.symbol",
        "trading.order.side",
        "trading.order.type",
        "server.address",
        "server.port",
        "http.request.method",
        "http.response.status_code",
        "error.type",
        "trading.ratelimit.used",
        "trading.ratelimit.limit",
    }
)

_HTTP_METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
# Symbols ("BTC/USDT", "BTC/USDT:USDT", "ETH-PERP"), sides, order types, exchange ids:
# short, and from a small alphabet. Anything else is not recorded.
_SAFE_TEXT = re.compile(r"^[A-Za-z0-9/:._\-]{1,64}$")


def server_address(url: str) -> str | None:
    """The host of `url`, without scheme, userinfo, path or query (where signed
    parameters live)."""
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    return host or None


def safe_method(method: object) -> str | None:
    text = str(method).upper()
    return text if text in _HTTP_METHODS else None


def safe_text(value: object) -> str | None:
    """`value` if it is a short token such as a symbol or an order side, else None."""
    if not isinstance(value, str):
        return None
    return value if _SAFE_TEXT.match(value) else None
