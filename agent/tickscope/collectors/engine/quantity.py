"""Kubernetes resource quantities ("512Mi", "1.5", "500m", "2e3") as numbers.

The downward API writes limits into env vars as plain integers scaled by the
resourceFieldRef's divisor; people write them by hand as quantities. Both parse.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

__all__ = ["parse_quantity"]

_SUFFIX = {
    "": Decimal(1),
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "k": Decimal("1e3"),
    "M": Decimal("1e6"),
    "G": Decimal("1e9"),
    "T": Decimal("1e12"),
    "P": Decimal("1e15"),
    "E": Decimal("1e18"),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}
_QUANTITY = re.compile(
    r"^\+?(\d+(?:\.\d*)?|\.\d+)(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)


def parse_quantity(text: str) -> float:
    match = _QUANTITY.match(text.strip())
    if match is None:
        raise ValueError(
            f"{text!r} is not a Kubernetes quantity (examples: 536870912, 512Mi, 1.5, 500m)"
        )
    number, exponent, suffix = match.groups()
    try:
        value = Decimal(number)
        if exponent:
            value *= Decimal(10) ** int(exponent[1:])
        value *= _SUFFIX[suffix or ""]
    except (InvalidOperation, OverflowError) as exc:  # pragma: no cover - regex bounds this
        raise ValueError(f"{text!r} is not a Kubernetes quantity") from exc
    return float(value)
