"""Prometheus exposition: the registry every part registers into, and rendering it
for a scrape with content negotiation (text 0.0.4 or OpenMetrics 1.0) and gzip."""

from __future__ import annotations

import re
import zlib
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

from tickscope.exposition.text import Lines, RenderedFamilies

__all__ = ["Exposition", "negotiable", "negotiate", "new_registry", "render"]

# Level 1 compresses exposition text ~8x, within a few percent of level 9, at a
# fraction of the CPU; the scrape is served on the event loop.
_GZIP_LEVEL = 1
_GZIP_WBITS = 31  # zlib's gzip container, as gzip.compress writes it
# Inflated pieces sent to a client that takes no gzip: a few writes per MB.
_PIECE = 1 << 18
_EOF = b"# EOF\n"
# A version parameter client_python can compare: dotted digits. Anything else
# ("bogus", "1.0.0-rc1", a quoted "1.0.0") makes its choose_encoder raise TypeError (a 500 on
# every scrape that sends it), so such media ranges are dropped first.
_VERSION = re.compile(r"^\s*version\s*=\s*\d{1,9}(?:\.\d{1,9}){0,3}\s*$")


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
    """A rendered /metrics: the bytes in pieces, a gzip stream when `gzipped`;
    `size` is the uncompressed length."""

    parts: tuple[bytes, ...]
    content_type: str
    gzipped: bool
    size: int

    @property
    def content_encoding(self) -> str | None:
        return "gzip" if self.gzipped else None

    @property
    def length(self) -> int:
        """The bytes as they are held (compressed when gzipped)."""
        return sum(len(part) for part in self.parts)

    @property
    def body(self) -> bytes:
        """Every piece as held, joined (compressed when gzipped)."""
        return b"".join(self.parts)

    def text(self, piece: int = _PIECE) -> Iterator[bytes]:
        """The uncompressed bytes, at most `piece` at a time: a gzipped exposition
        is inflated as it is sent, never whole."""
        if not self.gzipped:
            yield from self.parts
            return
        inflate = zlib.decompressobj(_GZIP_WBITS)
        for part in self.parts:
            data = inflate.decompress(part, piece)
            while data:
                yield data
                data = inflate.decompress(inflate.unconsumed_tail, piece)
        rest = inflate.flush()
        if rest:
            yield rest


class _Body:
    """Collects an exposition's pieces, compressing as they come when gzipped, so
    that a render holds its compressed output and one piece of text at most."""

    def __init__(self, gzipped: bool) -> None:
        self.parts: list[bytes] = []
        self.size = 0
        self._deflate = (
            zlib.compressobj(_GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS) if gzipped else None
        )

    def add(self, data: bytes) -> None:
        self.size += len(data)
        if self._deflate is None:
            self.parts.append(data)
            return
        compressed = self._deflate.compress(data)
        if compressed:
            self.parts.append(compressed)

    def add_text(self, text: str) -> None:
        self.add(text.encode())

    def close(self) -> tuple[bytes, ...]:
        if self._deflate is not None:
            self.parts.append(self._deflate.flush())
        return tuple(self.parts)


def render(
    registry: CollectorRegistry,
    accept: str = "",
    accept_encoding: str = "",
    names: Iterable[str] = (),
    rendered: Sequence[RenderedFamilies] = (),
    gzipped: bool | None = None,
) -> Exposition:
    """Render `registry`, then the pre-rendered families, the way the scraper
    asked for them; gzipped when `gzipped`, or when None as Accept-Encoding asks.

    `names` restricts the output to those metric families, as client_python's
    own handler does for `?name[]=...`.
    """
    encoder, content_type = choose_encoder(negotiable(accept))
    if gzipped is None:
        gzipped = gzip_accepted(accept_encoding)
    wanted = frozenset(names)
    head = encoder(_Only(registry, wanted) if wanted else registry)
    openmetrics = content_type.startswith("application/openmetrics-text")
    ends = openmetrics and head.endswith(_EOF)
    body = _Body(gzipped)
    body.add(head[: -len(_EOF)] if ends else head)
    if rendered:
        lines = Lines(body.add_text)
        for families in rendered:
            families.render(lines, openmetrics, wanted or None)
        lines.flush()
    if ends:
        body.add(_EOF)
    return Exposition(body.close(), content_type, gzipped, body.size)


def negotiate(accept: str = "", accept_encoding: str = "") -> tuple[str, bool]:
    """The Content-Type `render` answers these headers with, and whether it gzips:
    what a cached exposition is keyed on, found without rendering."""
    return choose_encoder(negotiable(accept))[1], gzip_accepted(accept_encoding)


def negotiable(accept: str) -> str:
    """`accept` without the media ranges whose version cannot be understood.

    Prometheus's own exporters (client_golang's expfmt.Negotiate) skip a media
    range with a version they do not know and fall back to the text format
    when nothing is left; this does the same before client_python's
    choose_encoder sees the header, so a bogus version never fails a scrape.
    """
    kept: list[str] = []
    for media_range in accept.split(","):
        params = media_range.split(";")[1:]
        versions = [p for p in params if p.strip().lower().startswith("version")]
        if all(_VERSION.match(p) for p in versions):
            kept.append(media_range)
    return ",".join(kept)


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
