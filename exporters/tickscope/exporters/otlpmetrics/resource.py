"""Labels from OTLP: a point's attributes, its scope, and its resource's identity.

As the specification's Prometheus compatibility rules say (and the Collector's
prometheusexporter does): service.namespace/service.name become `job`,
service.instance.id `instance`, and both override attributes of the same name;
the rest of the resource goes to one `target_info` series per (job, instance).
Attribute keys that collide once made label names are merged, their values
joined with ";" in the order of the original keys.
"""

from __future__ import annotations

import collections
from collections.abc import Iterable
from typing import Any

from tickscope.core.spanview import anyvalue_to_str
from tickscope.exporters.otlpmetrics.names import label_name
from tickscope.exposition.text import sorted_label_text

__all__ = ["IDENTIFYING", "Labeler"]

IDENTIFYING = frozenset({"service.name", "service.namespace", "service.instance.id"})
# Attribute keys seen more often than this are not remembered (an engine writing
# ids into keys must not grow the cache without bound).
_LABEL_CACHE = 10_000


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
        resource = {kv.key: anyvalue_to_str(kv.value) for kv in resource_attributes}
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
                pairs.setdefault(name, []).append((kv.key, anyvalue_to_str(kv.value)))
        labels = {
            name: kv[0][1] if len(kv) == 1 else ";".join(v for _, v in sorted(kv))
            for name, kv in pairs.items()
        }
        labels.update(scope)
        labels.update(identity)  # job and instance win over attributes of the same name
        return labels, renamed

    def expire(self, horizon: float) -> None:
        for key in [k for k, (_, seen) in self.targets.items() if seen < horizon]:
            del self.targets[key]
