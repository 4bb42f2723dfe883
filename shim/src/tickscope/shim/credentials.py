"""The credentials of the exchanges the shim instruments, and masking them in text.

Every exchange the shim instruments is registered here, by weak reference: it
is forgotten when the engine drops it, and its credentials are read from it
when text is masked, so keys set after the exchange was created (``ex.apiKey =
...``) are covered too. Nothing here keeps a copy of a credential beyond the
cache of the current pattern, which is rebuilt when the credentials change.

`mask(text)` replaces, case-insensitively:
- every credential value of a live instrumented exchange (apiKey, secret,
  password, uid, login, twofa, privateKey, walletAddress, token, accountId), raw,
  URL-encoded, base64 (standard and URL-safe, padded or not), hex, and as
  repr()/JSON escape it;
- the value of any parameter or header whose name says it is a credential or a
  signature (``signature=...``, ``'X-MBX-APIKEY': '...'``, ``"OK-ACCESS-SIGN":
  "..."``, ``api_key=...``, ``passphrase``, ``token``, ...), and bearer/basic
  authorization values, whoever's they are.

Standard library only: the instrumentation side uses it.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import urllib.parse
import weakref
from typing import Any

__all__ = ["CREDENTIAL_FIELDS", "MASK", "mask", "register", "registered"]

CREDENTIAL_FIELDS = (
    "apiKey",
    "secret",
    "password",
    "uid",
    "login",
    "twofa",
    "privateKey",
    "walletAddress",
    "token",
    "accountId",
)
MASK = "***"
# Shorter values are not masked: a 1-3 character "credential" would mask half the
# log (and is not a secret worth the name).
MIN_LENGTH = 4

_lock = threading.Lock()
_exchanges: dict[int, weakref.ref[Any]] = {}


def register(exchange: Any) -> None:
    """Remember `exchange` (weakly) so that its credentials are masked."""
    key = id(exchange)

    def forget(_: weakref.ref[Any], key: int = key) -> None:
        with _lock:
            current = _exchanges.get(key)
            if current is not None and current() is None:
                del _exchanges[key]

    try:
        ref = weakref.ref(exchange, forget)
    except TypeError:  # an object without weakref support is never kept
        return
    with _lock:
        _exchanges[key] = ref


def registered() -> list[Any]:
    with _lock:
        refs = list(_exchanges.values())
    return [exchange for exchange in (ref() for ref in refs) if exchange is not None]


def _values() -> frozenset[str]:
    values: set[str] = set()
    for exchange in registered():
        for field in CREDENTIAL_FIELDS:
            value = getattr(exchange, field, None)
            if isinstance(value, str):
                value = value.strip()
                if len(value) >= MIN_LENGTH:
                    values.add(value)
    return frozenset(values)


def _forms(value: str) -> set[str]:
    raw = value.encode()
    standard = base64.b64encode(raw).decode()
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    forms = {
        value,
        urllib.parse.quote(value),
        urllib.parse.quote(value, safe=""),
        urllib.parse.quote_plus(value),
        standard,
        standard.rstrip("="),
        urlsafe,
        urlsafe.rstrip("="),
        raw.hex(),  # IGNORECASE below covers upper-case hex
        repr(value)[1:-1],
        json.dumps(value)[1:-1],
    }
    return {form for form in forms if len(form) >= MIN_LENGTH}


_known: tuple[frozenset[str], re.Pattern[str] | None] = (frozenset(), None)


def _known_pattern() -> re.Pattern[str] | None:
    global _known
    values = _values()
    cached_values, pattern = _known
    if values == cached_values:
        return pattern
    forms: set[str] = set()
    for value in values:
        forms |= _forms(value)
    # Longest first: a value's base64 must not be masked only in part.
    alternatives = sorted(forms, key=len, reverse=True)
    pattern = (
        re.compile("|".join(re.escape(form) for form in alternatives), re.IGNORECASE)
        if alternatives
        else None
    )
    _known = (values, pattern)
    return pattern


# Names of parameters and headers that carry credentials or signatures.
_NAME = (
    r"(?:[\w.\-]*(?:sign|api[_\-]?key|access[_\-]?key|secret|passphrase|password|passwd"
    r"|token|auth|credential|private[_\-]?key|listen[_\-]?key)[\w.\-]*|key)"
)
# name=value in URLs, query strings and form bodies.
_PARAM = re.compile(rf"(?<![\w.\-])({_NAME})=([^&\s'\",;)}}\]]+)", re.IGNORECASE)
# 'name': 'value' / "name": "value" in dict reprs and JSON.
_QUOTED = re.compile(
    rf"""(['"])({_NAME})\1(\s*:\s*)(['"])((?:\\.|(?!\4).)*)\4""", re.IGNORECASE | re.DOTALL
)
# 'name': 12345 (a number or bare word).
_QUOTED_BARE = re.compile(rf"""(['"])({_NAME})\1(\s*:\s*)([^\s'",}}\]]+)""", re.IGNORECASE)
# Name: value, as an HTTP header line is written.
_HEADER = re.compile(rf"(?<![\w\-'\"])({_NAME})(:[ \t]*)([^\s'\",;]+)", re.IGNORECASE)
_BEARER = re.compile(r"\b(bearer|basic)\s+[A-Za-z0-9._~+/=\-]+", re.IGNORECASE)


def _quoted(match: re.Match[str]) -> str:
    quote, name, separator, value_quote = match.group(1, 2, 3, 4)
    return f"{quote}{name}{quote}{separator}{value_quote}{MASK}{value_quote}"


def mask(text: str) -> str:
    """`text` with every credential and signature in it replaced by ***."""
    pattern = _known_pattern()
    if pattern is not None:
        text = pattern.sub(MASK, text)
    text = _PARAM.sub(rf"\1={MASK}", text)
    text = _QUOTED.sub(_quoted, text)
    text = _QUOTED_BARE.sub(lambda m: f"{m[1]}{m[2]}{m[1]}{m[3]}{MASK}", text)
    # Bearer first: the header rule masks only the first word after "Authorization:".
    text = _BEARER.sub(rf"\1 {MASK}", text)
    return _HEADER.sub(rf"\1\2{MASK}", text)
