"""Building blocks shared by every part's config model.

Each part of the sidecar keeps its pydantic model beside its code; these are the
types they have in common: a strict base model (unknown keys are errors), durations
written the Prometheus way ("500ms", "15s", "5m"), byte sizes ("64MiB") and
regular expressions that are compiled, and so checked, at load time.
"""

from __future__ import annotations

import itertools
import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ByteSize, ConfigDict, Field

__all__ = [
    "Buckets",
    "Bytes",
    "Duration",
    "ListenHost",
    "Port",
    "Regex",
    "StrictModel",
    "parse_duration",
]


class StrictModel(BaseModel):
    """Base for config sections: a misspelt key must fail loudly, not be ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a Prometheus-style duration ("1m30s", "250ms").

    Anything that is not a string is handed on for pydantic to judge.
    """
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return float(text)
    except ValueError:
        pass
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(
            f"invalid duration {value!r}: use seconds or a duration such as 500ms, 15s, 5m, 1h"
        )
    return total


# Seconds, from a number or a duration string. Zero or less never makes sense for
# an interval or timeout, so the bound lives in the type.
Duration = Annotated[float, BeforeValidator(parse_duration), Field(gt=0)]

# A byte count from an integer or a size such as "64MiB"/"1GB" (pydantic's ByteSize).
Bytes = Annotated[ByteSize, Field(gt=0)]

# 0 asks the OS for a free port (tests use this and read the bound port from the log).
Port = Annotated[int, Field(ge=0, lt=65536)]

ListenHost = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\-\[\]%]+$")]


def _compile(value: Any) -> Any:
    if isinstance(value, re.Pattern):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a regular expression as a string")
    try:
        return re.compile(value)
    except re.error as exc:
        raise ValueError(f"invalid regular expression {value!r}: {exc}") from exc


Regex = Annotated[re.Pattern[str], BeforeValidator(_compile)]


def _increasing(bounds: list[float]) -> list[float]:
    if any(b <= a for a, b in itertools.pairwise(bounds)):
        raise ValueError("bucket bounds must be strictly increasing")
    return bounds


# Histogram bucket upper bounds in seconds: positive, finite, strictly increasing
# (+Inf is always added).
Buckets = Annotated[
    list[Annotated[float, Field(gt=0, allow_inf_nan=False)]],
    AfterValidator(_increasing),
    Field(min_length=1, max_length=64),
]
