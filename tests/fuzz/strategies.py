"""Hypothesis strategies for OTLP requests: hostile-but-valid and invalid contents.

Requests are built from opentelemetry-proto's own messages, so every field is one the
receivers really see: extreme exponential-histogram scales and offsets, NaN and
infinities, counts at both ends of uint64, bucket counts that do not match their
bounds, attribute names that collide with the exposition's own labels (le, quantile,
__name__, __x), empty and unicode names, long values, wrong id lengths. Then each is
encoded as protobuf or OTLP JSON (hex ids, as tickscope.receivers.otlp_json expects),
optionally damaged (truncated or bit-flipped protobuf; JSON with wrong types or deep
nesting), and gzipped or not.

Sizes are kept small (a few KiB a case) so that a minute of `make test` runs a few
hundred cases; the limits the receivers enforce on size are tested elsewhere.
"""

from __future__ import annotations

import base64
import gzip
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

from google.protobuf import json_format
from google.protobuf.message import Message
from hypothesis import strategies as st
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

__all__ = [
    "Case",
    "cases",
    "metrics_requests",
    "to_json",
    "trace_requests",
]

Signal = Literal["traces", "metrics"]
Encoding = Literal["protobuf", "json"]
Transport = Literal["http", "grpc"]

UINT64_MAX = 2**64 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

# Names that collide with what the exposition writes itself or that Prometheus
# reserves, names the translator turns into nothing or into a clash, and names
# the sidecar uses for its own families.
HOSTILE_NAMES = [
    "",
    "le",
    "quantile",
    "__name__",
    "__x",
    "__",
    "_",
    "total",
    "_total",
    "total_total",
    "p.clash",
    "hg",
    "hg_count",
    "hg_bucket",
    "hg_sum",
    "process_cpu_seconds",
    "process_cpu_seconds_total",
    "tickscope_receiver_requests",
    "target_info",
    "otel_scope_name",
    "job",
    "instance",
    "service.name",
    "1abc",
    "a-b/c d",
    "指标",
    "émoji🚀",
    "x" * 300,
    "a\nb",
    'q"uote\\',
    "ratio",
    "created",
    "x_created",
    "info",
]
UNITS = [
    "",
    "1",
    "s",
    "ms",
    "us",
    "By",
    "kBy",
    "KiBy",
    "MBy",
    "{requests}",
    "%",
    "1/s",
    "m/s",
    "°C",
]
# Span attributes the connectors read, so that hostile values reach them.
SPAN_KEYS = [
    "exchange.id",
    "ccxt.method",
    "trading.symbol",
    "trading.order.side",
    "trading.order.type",
    "trading.ratelimit.used",
    "trading.ratelimit.limit",
    "http.response.status_code",
    "http.request.method",
    "server.address",
    "error.type",
    "exchange",
    "method",
    "error_type",
]

_floats = st.one_of(
    st.sampled_from(
        [0.0, -0.0, 1.0, -1.0, 0.5, math.nan, math.inf, -math.inf, 5e-324, 1.7976931348623157e308]
    ),
    st.floats(allow_nan=True, allow_infinity=True),
)
_uint64 = st.one_of(
    st.sampled_from([0, 1, 2**32, 2**53 + 1, 2**63, UINT64_MAX]),
    st.integers(0, UINT64_MAX),
)
_int64 = st.one_of(
    st.sampled_from([0, -1, INT64_MIN, INT64_MAX, 2**53 + 1]), st.integers(INT64_MIN, INT64_MAX)
)
_text = st.one_of(
    st.sampled_from(HOSTILE_NAMES),
    st.text(max_size=20),
    st.text(alphabet="ab.", max_size=6),
)
_long_text = st.one_of(_text, st.integers(100, 3000).map(lambda n: "v" * n))
_ids = st.one_of(
    st.sampled_from([b"", b"\0" * 16, b"\0" * 8, b"\xff" * 16]),
    st.binary(min_size=16, max_size=16),
    st.binary(min_size=8, max_size=8),
    st.binary(max_size=20),
)


def _any_value(depth: int = 2) -> st.SearchStrategy[AnyValue]:
    scalars = st.one_of(
        _long_text.map(lambda v: AnyValue(string_value=v)),
        _int64.map(lambda v: AnyValue(int_value=v)),
        _floats.map(lambda v: AnyValue(double_value=v)),
        st.booleans().map(lambda v: AnyValue(bool_value=v)),
        st.binary(max_size=20).map(lambda v: AnyValue(bytes_value=v)),
        st.just(AnyValue()),  # no value set at all
    )
    if depth == 0:
        return scalars

    def array(values: list[AnyValue]) -> AnyValue:
        out = AnyValue()
        out.array_value.values.extend(values)
        return out

    def kvlist(pairs: list[tuple[str, AnyValue]]) -> AnyValue:
        out = AnyValue()
        out.kvlist_value.values.extend(KeyValue(key=k, value=v) for k, v in pairs)
        return out

    inner = _any_value(depth - 1)
    return st.one_of(
        scalars,
        st.lists(inner, max_size=3).map(array),
        st.lists(st.tuples(_text, inner), max_size=3).map(kvlist),
    )


def _attributes(keys: list[str], max_size: int = 4) -> st.SearchStrategy[list[KeyValue]]:
    key = st.one_of(st.sampled_from(keys), _text)
    return st.lists(
        st.builds(lambda k, v: KeyValue(key=k, value=v), key, _any_value()), max_size=max_size
    )


# -- traces ----------------------------------------------------------------------


@st.composite
def _span(draw: st.DrawFn) -> trace_pb2.Span:
    span = trace_pb2.Span(
        trace_id=draw(_ids),
        span_id=draw(_ids),
        parent_span_id=draw(st.sampled_from([b"", b"\1" * 8])),
        name=draw(st.one_of(st.sampled_from(["ccxt.create_order", "ccxt.fetch_ticker"]), _text)),
        kind=draw(st.integers(0, 7)),  # 6 and 7 are not in the enum: open enums allow them
        start_time_unix_nano=draw(_uint64),
        end_time_unix_nano=draw(_uint64),
    )
    span.attributes.extend(draw(_attributes(SPAN_KEYS, max_size=8)))
    span.status.code = draw(st.integers(0, 5))
    span.status.message = draw(_text)
    for _ in range(draw(st.integers(0, 1))):
        span.links.add(trace_id=draw(_ids), span_id=draw(_ids))
    return span


@st.composite
def trace_requests(draw: st.DrawFn) -> ExportTraceServiceRequest:
    request = ExportTraceServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rs = request.resource_spans.add()
        if draw(st.booleans()):
            rs.resource.attributes.add(key="service.name", value=draw(_any_value(0)))
        rs.resource.attributes.extend(draw(_attributes(["service.instance.id", "host.name"])))
        for _ in range(draw(st.integers(0, 2))):
            ss = rs.scope_spans.add()
            ss.scope.name = draw(_text)
            ss.spans.extend(draw(st.lists(_span(), max_size=4)))
    return request


# -- metrics ---------------------------------------------------------------------

_POINT_KEYS = ["le", "quantile", "__name__", "__x", "job", "instance", "otel_scope_name", "a.b"]


@st.composite
def _exemplars(draw: st.DrawFn) -> list[metrics_pb2.Exemplar]:
    out = []
    for _ in range(draw(st.integers(0, 2))):
        exemplar = metrics_pb2.Exemplar(
            time_unix_nano=draw(_uint64), trace_id=draw(_ids), span_id=draw(_ids)
        )
        exemplar.filtered_attributes.extend(draw(_attributes(_POINT_KEYS)))
        if draw(st.booleans()):
            exemplar.as_double = draw(_floats)
        else:
            exemplar.as_int = draw(_int64)
        out.append(exemplar)
    return out


def _point_common(draw: st.DrawFn, point: Any) -> None:
    point.attributes.extend(draw(_attributes(_POINT_KEYS)))
    point.start_time_unix_nano = draw(_uint64)
    point.time_unix_nano = draw(_uint64)
    point.flags = draw(st.sampled_from([0, 0, 1, 2, 0xFFFFFFFF]))


@st.composite
def _number_point(draw: st.DrawFn) -> metrics_pb2.NumberDataPoint:
    point = metrics_pb2.NumberDataPoint()
    _point_common(draw, point)
    if draw(st.booleans()):
        point.as_double = draw(_floats)
    else:
        point.as_int = draw(_int64)
    point.exemplars.extend(draw(_exemplars()))
    return point


@st.composite
def _histogram_point(draw: st.DrawFn) -> metrics_pb2.HistogramDataPoint:
    point = metrics_pb2.HistogramDataPoint()
    _point_common(draw, point)
    bounds = draw(st.lists(_floats, max_size=5))
    if draw(st.booleans()):
        bounds = sorted(b for b in bounds if not math.isnan(b))  # valid, mostly
    point.explicit_bounds.extend(bounds)
    # Usually len(bounds) + 1 counts, as the spec says; sometimes not.
    size = len(bounds) + 1 if draw(st.booleans()) else draw(st.integers(0, 7))
    counts = draw(st.lists(st.one_of(st.integers(0, 10), _uint64), min_size=size, max_size=size))
    point.bucket_counts.extend(counts)
    point.count = sum(counts) % (UINT64_MAX + 1) if draw(st.booleans()) else draw(_uint64)
    if draw(st.booleans()):
        point.sum = draw(_floats)
    if draw(st.booleans()):
        point.min = draw(_floats)
    if draw(st.booleans()):
        point.max = draw(_floats)
    point.exemplars.extend(draw(_exemplars()))
    return point


@st.composite
def _buckets(draw: st.DrawFn, buckets: Any) -> None:
    buckets.offset = draw(
        st.one_of(
            st.integers(-5, 5),
            st.sampled_from([-(2**31), 2**31 - 1, -1100, 1100, 2**20]),
            st.integers(-(2**31), 2**31 - 1),
        )
    )
    buckets.bucket_counts.extend(draw(st.lists(st.one_of(st.integers(0, 10), _uint64), max_size=6)))


@st.composite
def _exponential_point(draw: st.DrawFn) -> metrics_pb2.ExponentialHistogramDataPoint:
    point = metrics_pb2.ExponentialHistogramDataPoint()
    _point_common(draw, point)
    point.scale = draw(
        st.one_of(
            st.integers(-10, 20),  # the spec's range
            st.sampled_from([-11, 21, -(2**31), 2**31 - 1]),
        )
    )
    point.zero_count = draw(st.one_of(st.integers(0, 10), _uint64))
    point.zero_threshold = draw(_floats)
    draw(_buckets(point.positive))
    draw(_buckets(point.negative))
    counts = [*point.positive.bucket_counts, *point.negative.bucket_counts, point.zero_count]
    point.count = sum(counts) % (UINT64_MAX + 1) if draw(st.booleans()) else draw(_uint64)
    if draw(st.booleans()):
        point.sum = draw(_floats)
    point.exemplars.extend(draw(_exemplars()))
    return point


@st.composite
def _summary_point(draw: st.DrawFn) -> metrics_pb2.SummaryDataPoint:
    point = metrics_pb2.SummaryDataPoint()
    _point_common(draw, point)
    point.count = draw(_uint64)
    point.sum = draw(_floats)
    for _ in range(draw(st.integers(0, 3))):
        point.quantile_values.add(
            quantile=draw(st.one_of(st.sampled_from([0.0, 0.5, 0.99, 1.0]), _floats)),
            value=draw(_floats),
        )
    return point


_TEMPORALITY = st.integers(0, 3)  # 3 is not in the enum


@st.composite
def _metric(draw: st.DrawFn) -> metrics_pb2.Metric:
    metric = metrics_pb2.Metric(
        name=draw(_text),
        unit=draw(st.one_of(st.sampled_from(UNITS), _text)),
        description=draw(_text),
    )
    kind = draw(st.sampled_from(["gauge", "sum", "histogram", "exponential", "summary", "none"]))
    if kind == "gauge":
        metric.gauge.data_points.extend(draw(st.lists(_number_point(), max_size=3)))
    elif kind == "sum":
        metric.sum.is_monotonic = draw(st.booleans())
        metric.sum.aggregation_temporality = draw(_TEMPORALITY)
        metric.sum.data_points.extend(draw(st.lists(_number_point(), max_size=3)))
    elif kind == "histogram":
        metric.histogram.aggregation_temporality = draw(_TEMPORALITY)
        metric.histogram.data_points.extend(draw(st.lists(_histogram_point(), max_size=2)))
    elif kind == "exponential":
        metric.exponential_histogram.aggregation_temporality = draw(_TEMPORALITY)
        metric.exponential_histogram.data_points.extend(
            draw(st.lists(_exponential_point(), max_size=2))
        )
    elif kind == "summary":
        metric.summary.data_points.extend(draw(st.lists(_summary_point(), max_size=2)))
    return metric


@st.composite
def metrics_requests(draw: st.DrawFn) -> ExportMetricsServiceRequest:
    request = ExportMetricsServiceRequest()
    for _ in range(draw(st.integers(0, 2))):
        rm = request.resource_metrics.add()
        if draw(st.booleans()):
            rm.resource.attributes.add(key="service.name", value=draw(_any_value(0)))
        rm.resource.attributes.extend(
            draw(_attributes(["service.instance.id", "service.namespace", "job", "instance"]))
        )
        rm.schema_url = draw(st.sampled_from(["", "https://opentelemetry.io/schemas/1.21.0"]))
        for _ in range(draw(st.integers(0, 2))):
            sm = rm.scope_metrics.add()
            sm.scope.name = draw(_text)
            sm.scope.version = draw(_text)
            sm.scope.attributes.extend(draw(_attributes(["otel_scope_name", "le"])))
            sm.metrics.extend(draw(st.lists(_metric(), max_size=4)))
    return request


# -- encodings -------------------------------------------------------------------

_HEX_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(node: Any) -> None:
    """OTLP JSON writes trace and span ids as hex, where the protobuf JSON mapping
    writes base64: convert every id the mapping produced, anywhere in the tree."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _HEX_KEYS and isinstance(value, str):
                node[key] = base64.b64decode(value).hex()
            else:
                _hex_ids(value)
    elif isinstance(node, list):
        for value in node:
            _hex_ids(value)


def to_json(message: Message) -> dict[str, Any]:
    obj = json_format.MessageToDict(message)
    _hex_ids(obj)
    return obj


def _deep(depth: int) -> str:
    """A placeholder for arrays nested `depth` deep: json.dumps would recurse once
    per level (and fail at ~1,000), so they are spliced into the text after it."""
    return f"__deep_{depth}__"


_DEEP = re.compile(r'"__deep_(\d+)__"')


def _splice_deep(text: str) -> str:
    return _DEEP.sub(lambda m: "[" * int(m.group(1)) + "]" * int(m.group(1)), text)


# Values put in place of a field's own: other JSON types, numbers as the mapping's
# strings (and ones it rejects), huge ints, deep nesting.
_WRONG = st.one_of(
    st.sampled_from(
        [None, True, "", "NaN", "Infinity", "-Infinity", "1e999", "0x10", "zz", [], {}, 1.5, -1]
    ),
    st.just(2**70),
    st.sampled_from([10, 100, 1000, 10_000]).map(_deep),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            out += _paths(value, (*prefix, i))
    return out


@st.composite
def _json_body(draw: st.DrawFn, message: Message) -> bytes:
    obj = to_json(message)
    mutate = draw(st.sampled_from(["none", "none", "wrong_type", "deep_top", "garbage"]))
    if mutate == "wrong_type":
        paths = _paths(obj)
        if paths:
            path = draw(st.sampled_from(paths))
            node = obj
            for part in path[:-1]:
                node = node[part]
            node[path[-1]] = draw(_WRONG)
    elif mutate == "deep_top":
        key = (
            "resourceSpans" if isinstance(message, ExportTraceServiceRequest) else "resourceMetrics"
        )
        obj[key] = _deep(draw(st.sampled_from([100, 1000, 10_000])))
    text = _splice_deep(json.dumps(obj, allow_nan=False))
    if mutate == "garbage":
        cut = draw(st.integers(0, len(text)))
        return text[:cut].encode() + draw(st.sampled_from([b"", b"\xff", b"]]]", b"\0"]))
    return text.encode()


@st.composite
def _protobuf_body(draw: st.DrawFn, message: Message) -> bytes:
    body = message.SerializeToString()
    mutate = draw(st.sampled_from(["none", "none", "none", "truncate", "flip", "append"]))
    if mutate == "truncate" and body:
        return body[: draw(st.integers(0, len(body) - 1))]
    if mutate == "flip" and body:
        i = draw(st.integers(0, len(body) - 1))
        return body[:i] + bytes([body[i] ^ draw(st.integers(1, 255))]) + body[i + 1 :]
    if mutate == "append":
        return body + draw(st.binary(min_size=1, max_size=8))
    return body


@dataclass(frozen=True)
class Case:
    """One request: what it carries, how it is encoded and sent. `body` is never
    compressed here; the harness gzips it when `gzip` is set."""

    signal: Signal
    encoding: Encoding
    body: bytes
    gzip: bool = False
    transport: Transport = "http"

    @property
    def target(self) -> str:
        """The corpus directory (and atheris target) this body belongs to."""
        return f"{self.signal}_{'pb' if self.encoding == 'protobuf' else 'json'}"

    def wire_body(self) -> bytes:
        # mtime=0: the same case gives the same bytes, so runs are reproducible.
        return gzip.compress(self.body, mtime=0) if self.gzip else self.body


@st.composite
def cases(draw: st.DrawFn, signal: Signal) -> Case:
    message: Message = draw(trace_requests() if signal == "traces" else metrics_requests())
    encoding: Encoding = draw(st.sampled_from(["protobuf", "json"]))
    if encoding == "json":
        body = draw(_json_body(message))
        transport: Transport = "http"
    else:
        body = draw(_protobuf_body(message))
        transport = draw(st.sampled_from(["http", "grpc"]))
    return Case(signal, encoding, body, gzip=draw(st.booleans()), transport=transport)
