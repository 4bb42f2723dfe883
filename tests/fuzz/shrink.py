"""Shrinking a failing case to a minimal reproducer, greedily: the failing request is
decoded back into its protobuf message (or JSON tree), and elements of repeated
fields are removed, fields cleared and strings halved for as long as the failure
keeps its signature. Bodies that decode as neither are cut down byte-wise.

Each try runs the case alone on a fresh sidecar (a restart costs ~8 ms here), so a
shrink of a few hundred tries takes seconds.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from fuzz.strategies import Case

__all__ = ["shrink"]

Check = Callable[[Case], bool]


class _Budget:
    def __init__(self, tries: int) -> None:
        self.left = tries

    def spend(self) -> bool:
        self.left -= 1
        return self.left >= 0


def _repeated(field: FieldDescriptor) -> bool:
    # protobuf 5.x+ (upb) dropped FieldDescriptor.label for is_repeated.
    is_repeated = getattr(field, "is_repeated", None)
    if is_repeated is not None:
        return bool(is_repeated)
    return bool(field.label == FieldDescriptor.LABEL_REPEATED)


def _shrink_message(node: Message, test: Callable[[], bool], budget: _Budget) -> None:
    """Remove elements, clear fields, halve strings in `node` (a part of the message
    `test` serializes) while `test` holds. A failed try is undone by restoring the
    node from a snapshot, so no reference into it is kept across a try."""

    def attempt(change: Callable[[], None]) -> bool:
        snapshot = node.SerializeToString()
        change()
        if budget.spend() and test():
            return True
        node.Clear()
        node.MergeFromString(snapshot)
        return False

    for field, _ in list(node.ListFields()):
        if budget.left <= 0:
            return
        name = field.name
        if attempt(lambda name=name: node.ClearField(name)):
            continue
        if _repeated(field):
            for i in range(len(getattr(node, name)) - 1, -1, -1):
                if budget.left <= 0:
                    return
                if attempt(lambda name=name, i=i: getattr(node, name).__delitem__(i)):
                    continue
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    _shrink_message(getattr(node, name)[i], test, budget)
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            _shrink_message(getattr(node, name), test, budget)
        elif field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES):
            while len(getattr(node, name)) > 1 and budget.left > 0:
                half = getattr(node, name)[: len(getattr(node, name)) // 2]
                if not attempt(lambda name=name, half=half: setattr(node, name, half)):
                    break


def _shrink_json(node: Any, test: Callable[[], bool], budget: _Budget) -> None:
    if isinstance(node, dict):
        for key in list(node):
            if budget.left <= 0:
                return
            value = node.pop(key)
            if budget.spend() and test():
                continue
            node[key] = value
            _shrink_json(value, test, budget)
    elif isinstance(node, list):
        for i in range(len(node) - 1, -1, -1):
            if budget.left <= 0:
                return
            value = node.pop(i)
            if budget.spend() and test():
                continue
            node.insert(i, value)
            _shrink_json(value, test, budget)


def _shrink_bytes(case: Case, check: Check, budget: _Budget) -> Case:
    body = case.body
    chunk = max(1, len(body) // 2)
    while chunk >= 1 and budget.left > 0:
        i, progressed = 0, False
        while i < len(body) and budget.left > 0:
            candidate = body[:i] + body[i + chunk :]
            if budget.spend() and check(replace(case, body=candidate)):
                body, progressed = candidate, True
            else:
                i += chunk
        if not progressed:
            chunk //= 2
    return replace(case, body=body)


def shrink(case: Case, check: Check, tries: int = 400) -> Case:
    """A smaller case for which `check` still holds (`check(case)` must hold)."""
    budget = _Budget(tries)
    # Plain before gzip, and HTTP before gRPC, when the failure does not need them.
    for simpler in (replace(case, gzip=False), replace(case, transport="http")):
        if simpler != case and budget.spend() and check(simpler):
            case = simpler
    if case.encoding == "protobuf":
        message: Message = (
            ExportTraceServiceRequest()
            if case.signal == "traces"
            else ExportMetricsServiceRequest()
        )
        try:
            message.ParseFromString(case.body)
        except DecodeError:
            return _shrink_bytes(case, check, budget)
        current = case

        def test_message() -> bool:
            nonlocal current
            candidate = replace(case, body=message.SerializeToString())
            if check(candidate):
                current = candidate
                return True
            return False

        if not test_message():  # re-encoding lost what failed (unknown fields, ...)
            return _shrink_bytes(case, check, budget)
        _shrink_message(message, test_message, budget)
        return current
    try:
        tree = json.loads(case.body)
    except (ValueError, RecursionError):
        return _shrink_bytes(case, check, budget)
    current = case

    def test_json() -> bool:
        nonlocal current
        try:
            body = json.dumps(tree, ensure_ascii=False).encode("utf-8", "surrogatepass")
        except (ValueError, RecursionError):
            return False
        candidate = replace(case, body=body)
        if check(candidate):
            current = candidate
            return True
        return False

    if not test_json():
        return _shrink_bytes(case, check, budget)
    _shrink_json(tree, test_json, budget)
    return current
