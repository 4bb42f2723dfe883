"""The configuration reference, generated from the config models.

docs/configuration.md embeds this table between markers, and a test checks that
it is current: the reference cannot drift from the code.
"""

from __future__ import annotations

import re
import typing
from typing import Any

from pydantic import BaseModel, ByteSize
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from tickscope.agent.config import ENV_NESTING, ENV_PREFIX, Config, _unwrap

__all__ = ["BEGIN", "END", "reference"]

BEGIN = "<!-- BEGIN GENERATED: tickscope config-reference -->"
END = "<!-- END GENERATED -->"


def _show(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, re.Pattern):
        return f"`{value.pattern}`"
    if isinstance(value, ByteSize):
        return f"`{value.human_readable(separator='')}`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float):
        return f"`{value:g}s`"
    if isinstance(value, list):
        return "`[]`" if not value else f"`{value}`"
    return f"`{value}`"


def _default(field: FieldInfo) -> Any:
    if field.default is not PydanticUndefined:
        return field.default
    if field.default_factory is not None:
        return field.default_factory()  # type: ignore[call-arg]
    return PydanticUndefined


def _rows(model: type[BaseModel], path: list[str], in_list: bool, instance: Any) -> list[str]:
    """One row per setting; `instance` is the parent's default value of this
    section, whose values are the real defaults (a section's default may differ
    from its class's field defaults)."""
    rows = []
    for name, field in model.model_fields.items():
        key = [*path, name]
        inner = _unwrap(field.annotation)
        is_list = typing.get_origin(field.annotation) is list
        nested = isinstance(inner, type) and issubclass(inner, BaseModel)
        default = getattr(instance, name) if instance is not None else _default(field)
        dotted = ".".join(key)
        env = "" if in_list else f"`{ENV_PREFIX}{ENV_NESTING.join(k.upper() for k in key)}`"
        if nested and not is_list:
            section = default if isinstance(default, BaseModel) else None
            rows.extend(_rows(inner, key, in_list, section))
            continue
        shown = "required" if default is PydanticUndefined else _show(default)
        cells = (f"`{dotted}`", shown, env, field.description or "")
        rows.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        if nested and is_list:
            rows.extend(_rows(inner, [f"{dotted}[]"], True, None))
    return rows


def reference() -> str:
    lines = [
        "| key | default | env var | meaning |",
        "|---|---|---|---|",
        *_rows(Config, [], False, Config()),
    ]
    return "\n".join(lines) + "\n"
