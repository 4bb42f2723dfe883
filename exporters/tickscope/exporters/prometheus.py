"""Prometheus exposition: the registry every part registers into, and rendering it
for a scrape with content negotiation (text 0.0.4 or OpenMetrics 1.0) and gzip."""

from __future__ import annotations

import gzip
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    disable_created_metrics,
)
from prometheus_client.exposition import choose_encoder, gzip_accepted
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from tickscope.exposition.text import RenderedFamilies

__all__ = ["Exposition", "new_registry", "render"]

# Level 1 compresses exposition text ~8x, within a few percent of level 9, at a
# fraction of the CPU; the scrape is served on the event loop.
_GZIP_LEVEL = 1
_EOF = b"# EOF\n"


def new_registry() -> CollectorRegistry:
    """A registry with prometheus_client's own process_*, python_gc_* and
    python_info: the sidecar's resource use, next to everything it collects."""
    # *_created series double the counters in the text format and no query uses them.
    disable_created_metrics()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry(auto_describe=False)
    for collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        registry.register(collector)
    return registry


@dataclass(frozen=True, slots=True)
class Exposition:
    body: bytes
    content_type: str
    content_encoding: str | None


def render(
    registry: CollectorRegistry,
    accept: str = "",
    accept_encoding: str = "",
    names: Iterable[str] = (),
    rendered: Sequence[RenderedFamilies] = (),
) -> Exposition:
    """Render `registry`, then the pre-rendered families, the way the scraper
    asked for them.

    `names` restricts the output to those metric families, as client_python's
    own handler does for `?name[]=...`.
    """
    encoder, content_type = choose_encoder(accept)
    wanted = frozenset(names)
    body = encoder(_Only(registry, wanted) if wanted else registry)
    if rendered:
        openmetrics = content_type.startswith("application/openmetrics-text")
        lines: list[str] = []
        for families in rendered:
            families.render(lines, openmetrics, wanted or None)
        if lines:
            extra = "".join(lines).encode()
            if openmetrics and body.endswith(_EOF):
                body = body[: -len(_EOF)] + extra + _EOF
            else:
                body += extra
    if gzip_accepted(accept_encoding):
        return Exposition(gzip.compress(body, compresslevel=_GZIP_LEVEL), content_type, "gzip")
    return Exposition(body, content_type, None)


class _Only(Collector):
    """The families (or single samples) of `registry` named in `names`.

    client_python's restricted_registry finds collectors by the names they
    describe at registration; tickscope's collectors publish names that change
    with what they find, so filtering happens on what they yield instead.
    """

    def __init__(self, registry: CollectorRegistry, names: frozenset[str]) -> None:
        self._registry = registry
        self._names = names

    def collect(self) -> Iterator[Metric]:
        for metric in self._registry.collect():
            if metric.name in self._names:
                yield metric
                continue
            samples = [s for s in metric.samples if s.name in self._names]
            if samples:
                only = Metric(metric.name, metric.documentation, metric.type, metric.unit)
                only.samples = samples
                yield only
