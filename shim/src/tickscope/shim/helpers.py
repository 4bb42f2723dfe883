"""Helpers for engine code: traced blocks, cache hit/miss counts, queue depths."""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.trace import SpanKind, Status, StatusCode

from tickscope.shim import gate
from tickscope.shim.version import __version__

__all__ = ["CacheMetrics", "cache_metrics", "queue_gauge", "traced"]

F = TypeVar("F", bound=Callable[..., Any])
_SCOPE = "tickscope.shim"


class traced:
    """A span around engine code: `@traced("risk.check")` on a function (sync or
    async), or `with traced("strategy.step"):` around a block.

    An exception sets the span's status to ERROR and `error.type` to its class
    name, and propagates unchanged; its message is not recorded (it may hold
    what the engine would not want in telemetry).
    """

    def __init__(
        self,
        name: str,
        attributes: dict[str, str | int | float | bool] | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
    ) -> None:
        self.name = name
        self.attributes = attributes or {}
        self.kind = kind
        self._stack: list[Any] = []

    def _start(self) -> Any:
        if not gate.allow():  # the sidecar is unreachable: no span to make
            return contextlib.nullcontext(trace.INVALID_SPAN)
        tracer = trace.get_tracer(_SCOPE, __version__)
        return tracer.start_as_current_span(
            self.name,
            kind=self.kind,
            attributes=self.attributes,
            record_exception=False,
            set_status_on_exception=False,
        )

    def __enter__(self) -> trace.Span:
        manager = self._start()
        self._stack.append(manager)
        span: trace.Span = manager.__enter__()
        return span

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        manager = self._stack.pop()
        if error is not None and isinstance(error, Exception):
            _mark_error(trace.get_current_span(), error)
        manager.__exit__(kind, error, tb)

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                with self._start() as span:
                    try:
                        return await fn(*args, **kwargs)
                    except Exception as error:
                        _mark_error(span, error)
                        raise

            return cast(F, run_async)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            with self._start() as span:
                try:
                    return fn(*args, **kwargs)
                except Exception as error:
                    _mark_error(span, error)
                    raise

        return cast(F, run)


def _mark_error(span: trace.Span, error: BaseException) -> None:
    kind = type(error).__name__
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, kind))


class CacheMetrics:
    """Counts lookups of one engine cache: engine.cache.lookups{cache, result}
    (engine_cache_lookups_total on /metrics), result hit or miss."""

    def __init__(self, name: str) -> None:
        meter = metrics.get_meter(_SCOPE, __version__)
        self._counter = meter.create_counter(
            "engine.cache.lookups",
            unit="{lookup}",
            description="Lookups of an engine cache, by result.",
        )
        self._hit = {"cache": name, "result": "hit"}
        self._miss = {"cache": name, "result": "miss"}

    def hit(self) -> None:
        self._counter.add(1, self._hit)

    def miss(self) -> None:
        self._counter.add(1, self._miss)

    def record(self, hit: bool) -> None:
        self._counter.add(1, self._hit if hit else self._miss)


def cache_metrics(name: str) -> CacheMetrics:
    return CacheMetrics(name)


def queue_gauge(name: str, depth: Callable[[], int]) -> None:
    """Report `depth()` as engine.queue.depth{queue=name} at every metrics export.

    `depth` runs on the exporter's thread: it must be cheap and thread-safe (len()
    of a deque or asyncio.Queue.qsize() is). An exception in it skips one reading.
    """
    meter = metrics.get_meter(_SCOPE, __version__)
    attributes = {"queue": name}

    def observe(_: CallbackOptions) -> Iterable[Observation]:
        try:
            return [Observation(depth(), attributes)]
        except Exception:
            return []

    meter.create_observable_gauge(
        "engine.queue.depth",
        [observe],
        unit="{item}",
        description="Items waiting in an engine queue.",
    )
