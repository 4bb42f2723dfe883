"""Building blocks shared by every part's config model.

Each part of the sidecar keeps its pydantic model beside its code; these are the
types they have in common: a strict base model (unknown keys are errors), durations
written the Prometheus way ("500ms", "15s", "5m"), byte sizes ("64MiB") and
regular expressions that are compiled, and so checked, at load time.

Every number here is bounded and finite: a config that passes check-config must
not break `run` later (a timeout of inf makes threading's waits raise
OverflowError; a size past 2^63 overflows the C long that gRPC takes).
"""

from __future__ import annotations

import functools
import itertools
import math
import re
from typing import Annotated, Any, Protocol

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ByteSize,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
)

__all__ = [
    "MAX_BYTES",
    "MAX_DURATION_SECONDS",
    "Bool",
    "Buckets",
    "Bytes",
    "Duration",
    "LinearRegex",
    "ListenHost",
    "Pattern",
    "Port",
    "Regex",
    "StrictModel",
    "parse_duration",
]


def _strict_bool(value: Any) -> Any:
    # pydantic's lax bool takes 1, 0, 1.0, "yes", "on", "1": a `required: 2` typo or a
    # number where a switch belongs is then silently a switch. YAML gives real
    # booleans; env vars give strings, so "true"/"false" (any case) stay accepted.
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {_short(value)}")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# A switch: true or false (YAML booleans, or the strings from env vars), nothing else.
Bool = Annotated[bool, BeforeValidator(_strict_bool)]


class StrictModel(BaseModel):
    """Base for config sections: a misspelt key must fail loudly, not be ignored.

    Every `bool` field of a subclass is validated as `Bool` (true/false only): the
    annotation is rewritten here, before pydantic reads it, so each component's
    model gets strict switches without importing anything but this base.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # Runs inside type.__new__, before pydantic collects the fields from
        # __annotations__ (strings here, under `from __future__ import annotations`).
        # inspect.get_annotations returns a copy; the class's own dict must change.
        annotations = cls.__dict__.get("__annotations__", {})  # noqa: RUF063
        for key, annotation in list(annotations.items()):
            if annotation in ("bool", bool):
                annotations[key] = Bool
            elif annotation in ("bool | None", "Optional[bool]"):
                annotations[key] = Bool | None


_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")


def parse_duration(value: Any) -> Any:
    """Seconds from a number or a Prometheus-style duration ("1m30s", "250ms").

    Anything that is not a string is handed on for pydantic to judge.
    """
    if isinstance(value, bool):
        raise ValueError(f"expected a duration, got {value!r}")
    if isinstance(value, float):
        return _finite(value, value)
    if not isinstance(value, str):
        return value
    text = value.strip()
    try:
        return _finite(float(text), value)
    except ValueError as exc:
        if "finite" in str(exc):
            raise
    pos = 0
    total = 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise ValueError(
            f"invalid duration {_short(value)}: use seconds or a duration such as 500ms, 15s, "
            "5m, 1h"
        )
    return _finite(total, value)


def _finite(seconds: float, given: Any) -> float:
    # inf, nan, 1e309 (which float() reads as inf) and "9"*400 + "d" are no duration.
    if not math.isfinite(seconds):
        raise ValueError(f"expected a finite duration, got {_short(given)}")
    return seconds


# The longest duration any setting accepts: 365 days. Nothing the sidecar waits for
# or keeps is meant to last longer, and it stays far below what threading and
# asyncio accept as a timeout (PY_TIMEOUT_MAX, ~292 years on Linux; inf or 1e309
# raise OverflowError there).
MAX_DURATION_SECONDS = 365 * 86400.0

# Seconds, from a number or a duration string. Zero or less never makes sense for
# an interval or timeout, so the bound lives in the type; inf and NaN ("inf",
# 1e309) are refused, as is anything past MAX_DURATION_SECONDS.
Duration = Annotated[
    float,
    BeforeValidator(parse_duration),
    Field(gt=0, le=MAX_DURATION_SECONDS, allow_inf_nan=False),
]

# The largest byte count any setting accepts: 2^63-1, the largest C int64, which
# is what the libraries sizes are handed to take (gRPC's channel options, buffers).
MAX_BYTES = 2**63 - 1


def _finite_bytes(value: Any) -> Any:
    # ByteSize would turn True into 1 byte and say "could not parse value and unit"
    # for inf; say what is wrong instead.
    if isinstance(value, bool):
        raise ValueError(f"expected a size in bytes, got {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"expected a finite size in bytes, got {value!r}")
    return value


# A byte count from an integer or a size such as "64MiB"/"1GB" (pydantic's ByteSize),
# at most MAX_BYTES.
Bytes = Annotated[ByteSize, BeforeValidator(_finite_bytes), Field(gt=0, le=MAX_BYTES)]


def _no_bool(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError(f"expected a port number, got {value!r}")
    return value


# 0 asks the OS for a free port (tests use this and read the bound port from the log).
Port = Annotated[int, BeforeValidator(_no_bool), Field(ge=0, lt=65536)]

ListenHost = Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:\-\[\]%]+$")]


class Pattern(Protocol):
    """What a config regex offers: a LinearRegex, or a default a model wrote as
    re.compile(...) (defaults are not validated; they are the project's own)."""

    @property
    def pattern(self) -> str: ...

    def search(self, text: str, /) -> Any | None: ...

    def match(self, text: str, /) -> Any | None: ...

    def fullmatch(self, text: str, /) -> Any | None: ...


@functools.cache
def _re2() -> tuple[Any, Any]:
    """The re2 module and the options every LinearRegex is compiled with.

    Imported on the first LinearRegex, not with this module: every config model
    imports it, and google-re2 (its extension, RE2 and abseil) is ~1.6 MiB of RSS
    (measured on a running sidecar) that a config with no regex never needs.
    """
    import re2

    options = re2.Options()
    # Compile errors come back as the exception, not also as a line on stderr from
    # RE2's own logger (absl), which check-config's one-line messages would not match.
    options.log_errors = False
    return re2, options


class LinearRegex:
    """A regular expression matched by RE2: in time linear in the text, whatever the
    pattern. Config regexes are matched against strings other people control (any
    local user writes a process's command line and can FUSE-mount a directory of
    their own; an engine names its spans), and Python's backtracking `re` holds the
    GIL for seconds on `(a+)+$` against 'a'*24 + '!' (0.98 s measured here, doubling
    per character), so no timeout can interrupt it. RE2 took 1.2 us for 'a'*40 + '!'.
    A plain device name costs ~3.8 us against re's ~0.2 us: nothing at tens of
    devices per collection. RE2 syntax is also what node_exporter and Prometheus use
    (Go's regexp), so their documented filters work here unchanged.

    The interface is the part of re.Pattern the sidecar uses: `pattern`, `search`,
    `match`, `fullmatch` (each returns a match object or None).
    """

    __slots__ = ("_pattern", "_re")

    def __init__(self, pattern: str) -> None:
        re2, options = _re2()
        try:
            self._re = re2.compile(pattern, options)
        except re2.error as exc:
            detail = exc.args[0] if exc.args else ""
            if isinstance(detail, bytes):
                detail = detail.decode("utf-8", errors="replace")
            raise ValueError(
                f"invalid regular expression {_short(pattern)}: {detail or 'does not compile'}"
                " (regexes are RE2 syntax, matched in linear time: no backreferences,"
                " lookahead or lookbehind; write \\z for Python's \\Z)"
            ) from None
        self._pattern = pattern

    @property
    def pattern(self) -> str:
        return self._pattern

    @staticmethod
    def _text(text: str) -> str:
        # RE2 matches UTF-8; a str holding surrogates (psutil decodes a command line
        # with invalid UTF-8 using surrogateescape) cannot be encoded and would raise
        # UnicodeEncodeError. Each invalid byte is matched as U+FFFD instead, one
        # character, so `.` still spans it.
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return text.encode("utf-8", errors="surrogateescape").decode("utf-8", "replace")
        return text

    def search(self, text: str) -> Any | None:
        return self._re.search(self._text(text))

    def match(self, text: str) -> Any | None:
        return self._re.match(self._text(text))

    def fullmatch(self, text: str) -> Any | None:
        return self._re.fullmatch(self._text(text))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LinearRegex) and other.pattern == self.pattern

    def __hash__(self) -> int:
        return hash((LinearRegex, self.pattern))

    def __repr__(self) -> str:
        return f"LinearRegex({self.pattern!r})"


def _compile(value: Any) -> LinearRegex:
    if isinstance(value, LinearRegex):
        return value
    if isinstance(value, re.Pattern):
        # A compiled default written with re.compile: the same pattern, under RE2.
        value = value.pattern
    if not isinstance(value, str):
        raise ValueError("expected a regular expression as a string")
    return LinearRegex(value)


def _pattern_of(value: Any) -> str:
    # Defaults written as re.compile(...) are not validated and stay re.Pattern.
    return str(value.pattern)


Regex = Annotated[
    Pattern,
    PlainValidator(_compile),
    PlainSerializer(_pattern_of, return_type=str),
    WithJsonSchema({"type": "string", "format": "regex"}),
]


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
