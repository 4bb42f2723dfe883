"""Labels from OTLP: a point's attributes, its scope, and its resource's identity.

As the specification's Prometheus compatibility rules say (and the Collector's
prometheusexporter does): service.namespace/service.name become `job`,
service.instance.id `instance`, and both override attributes of the same name;
the rest of the resource goes to one `target_info` series per (job, instance).
Attribute keys that collide once made label names are merged, their values
joined with ";" in the order of the original keys.
"""

from __future__ import annotations

import base64
import collections
import json
import math
from collections.abc import Iterable
from typing import Any

from opentelemetry.proto.common.v1 import common_pb2

from tickscope.exporters.otlpmetrics.names import label_name
from tickscope.exposition.text import sorted_label_text

__all__ = ["IDENTIFYING", "Labeler", "label_value"]

IDENTIFYING = frozenset({"service.name", "service.namespace", "service.instance.id"})
# Attribute keys seen more often than this are not remembered (an engine writing
# ids into keys must not grow the cache without bound).
_LABEL_CACHE = 10_000


_INFO_RESERVED = frozenset({"le", "quantile"})


def _json(value: common_pb2.AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    if kind == "int_value":
        return value.int_value
    if kind == "double_value":
        d = value.double_value
        # JSON has no NaN or infinities: written as strings, as OTLP/JSON writes them.
        return (
            d if math.isfinite(d) else ("NaN" if d != d else ("Infinity" if d > 0 else "-Infinity"))
        )
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    if kind == "array_value":
        return [_json(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _json(kv.value) for kv in value.kvlist_value.values}
    return None


def label_value(value: common_pb2.AnyValue) -> str:
    """An attribute value as a label value, as the specification's attribute rules say
    for non-string values: strings as they are, booleans true/false, integers in
    decimal, doubles as Python's shortest repr, bytes base64, arrays and maps as
    compact JSON (with bytes inside as base64 and non-finite doubles as strings)."""
    kind = value.WhichOneof("value")
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return "true" if value.bool_value else "false"
    if kind == "int_value":
        return str(value.int_value)
    if kind == "double_value":
        return repr(value.double_value)
    if kind in ("array_value", "kvlist_value"):
        return json.dumps(_json(value), separators=(",", ":"), ensure_ascii=False)
    if kind == "bytes_value":
        return base64.b64encode(value.bytes_value).decode()
    return ""


class Labeler:
    """Label names for attribute keys (cached), label sets for points, and the
    target_info series of the resources seen."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        # (job, instance) -> (target_info label text, last seen)
        self.targets: dict[tuple[str, str], tuple[str, float]] = {}

    def label(self, key: str) -> str:
        name = self._names.get(key)
        if name is None:
            name = label_name(key)
            if len(self._names) > _LABEL_CACHE:
                self._names.clear()
            self._names[key] = name
        return name

    def identity(self, resource_attributes: Iterable[Any], now: float) -> dict[str, str]:
        """job and instance for a resource; records its target_info."""
        resource = {kv.key: label_value(kv.value) for kv in resource_attributes}
        labels: dict[str, str] = {}
        service = resource.get("service.name")
        if service:
            namespace = resource.get("service.namespace")
            labels["job"] = f"{namespace}/{service}" if namespace else service
        instance = resource.get("service.instance.id")
        if instance:
            labels["instance"] = instance
        rest = {k: v for k, v in resource.items() if k not in IDENTIFYING}
        if rest and labels:
            pairs: dict[str, list[tuple[str, str]]] = collections.defaultdict(list)
            for key, value in rest.items():
                name = self.label(key)
                if name in _INFO_RESERVED:
                    # target_info is a gauge (info in OpenMetrics): le and quantile are
                    # its exposition's own as on any point (promtool flags them).
                    name = f"key_{name}"
                if name:
                    pairs[name].append((key, value))
            merged = {n: ";".join(v for _, v in sorted(kv)) for n, kv in pairs.items()}
            merged.update(labels)
            target = (labels.get("job", ""), labels.get("instance", ""))
            self.targets[target] = (sorted_label_text(merged), now)
        return labels

    def labels(
        self,
        attributes: Iterable[Any],
        identity: dict[str, str],
        scope: dict[str, str],
        own: frozenset[str] = frozenset(),
    ) -> tuple[dict[str, str], bool]:
        """A point's label set: its attributes, then the scope, then job/instance; and
        whether an attribute was renamed because its name is the exposition's own:
        `own` (le and quantile) or a reserved `__` name
        (names.label_name gives those a "key" prefix)."""
        pairs: dict[str, list[tuple[str, str]]] = {}
        renamed = False
        for kv in attributes:
            name = self.label(kv.key)
            if name in own:
                name, renamed = f"key_{name}", True
            elif name.startswith("key__"):
                renamed = True
            if name:
                pairs.setdefault(name, []).append((kv.key, label_value(kv.value)))
        labels = {
            name: kv[0][1] if len(kv) == 1 else ";".join(v for _, v in sorted(kv))
            for name, kv in pairs.items()
        }
        labels.update(scope)
        labels.update(identity)  # job and instance win over attributes of the same name
        return labels, renamed

    def scope(self, scope: Any, schema_url: str) -> dict[str, str]:
        """The scope's labels, as the specification's Prometheus rules say (a MUST):
        otel_scope_name, otel_scope_version, otel_scope_schema_url (when set) and each
        scope attribute as otel_scope_<name>; none for an unnamed scope."""
        labels: dict[str, str] = {}
        if not scope.name:
            return labels
        for kv in scope.attributes:
            name = self.label(kv.key)
            if name and name not in ("name", "version", "schema_url"):
                labels[f"otel_scope_{name}"] = label_value(kv.value)
        labels["otel_scope_name"] = scope.name
        labels["otel_scope_version"] = scope.version
        if schema_url:
            labels["otel_scope_schema_url"] = schema_url
        return labels

    def expire(self, horizon: float) -> None:
        for key in [k for k, (_, seen) in self.targets.items() if seen < horizon]:
            del self.targets[key]
