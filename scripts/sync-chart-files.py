"""Copy what the Helm chart ships from the rest of the repository into helm/tickscope/.

- alert-rules/*.rules.yml  -> helm/tickscope/files/alert-rules/ (the PrometheusRule's groups)
- dashboards/tickscope-*.json -> helm/tickscope/files/dashboards/ (the dashboard ConfigMaps)
- the sidecar's config keys (tickscope.agent.config.Config, walked model by model) ->
  `definitions.sidecarConfig` of helm/tickscope/values.schema.json, so that a misspelt key
  in `sidecar.config` fails at install time instead of crash-looping the sidecar. Only the
  shape is checked there (known keys, objects, lists, scalars); values are the sidecar's
  to judge (`tickscope check-config`, which the chart's tests run on the rendered config).

Helm reads files only inside the chart's folder, hence copies. `--check` changes nothing
and exits 1, naming each file, when a copy is missing, differs or is left over.
"""

from __future__ import annotations

import argparse
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "tickscope"
SCHEMA = CHART / "values.schema.json"

# (source folder, glob, destination folder in the chart)
COPIES = (
    (ROOT / "alert-rules", "*.rules.yml", CHART / "files" / "alert-rules"),
    (ROOT / "dashboards", "tickscope-*.json", CHART / "files" / "dashboards"),
)

JSONSchema = dict[str, Any]


def planned_copies() -> dict[Path, bytes]:
    """Every file the chart's files/ should hold, with its content."""
    wanted: dict[Path, bytes] = {}
    for source, pattern, target in COPIES:
        for path in sorted(source.glob(pattern)):
            wanted[target / path.name] = path.read_bytes()
    return wanted


def _leaf(annotation: Any) -> JSONSchema:
    """The loose schema of a field: objects and lists by structure, scalars as any
    scalar (durations are numbers or strings, sizes too, regexes are strings)."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _leaf(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        schemas = [_leaf(a) for a in args if a is not type(None)]
        if type(None) in args:
            schemas.append({"type": "null"})
        if all(set(s) == {"type"} for s in schemas):
            # Plain types merge into one list: {"type": ["string", "number", "null"]}.
            names: list[str] = []
            for s in schemas:
                for name in s["type"] if isinstance(s["type"], list) else [s["type"]]:
                    if name not in names:
                        names.append(name)
            return {"type": names[0] if len(names) == 1 else names}
        distinct = {json.dumps(s, sort_keys=True): s for s in schemas}
        if len(distinct) == 1:
            return next(iter(distinct.values()))
        return {"anyOf": list(distinct.values())}
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return {"$ref": f"#/definitions/sidecarConfig/definitions/{annotation.__name__}"}
    if origin in (list, tuple, set, frozenset) or annotation in (list, tuple):
        element = [a for a in typing.get_args(annotation) if a is not Ellipsis]
        items = _leaf(element[0]) if element else {}
        return {"type": "array", "items": items} if items else {"type": "array"}
    if origin is dict or annotation is dict:
        return {"type": "object"}
    if annotation is bool:
        return {"type": "boolean"}
    return {"type": ["string", "number", "boolean"]}


def _model_schema(model: type[BaseModel], definitions: dict[str, JSONSchema]) -> JSONSchema:
    properties: dict[str, JSONSchema] = {}
    for name, field in model.model_fields.items():
        key = field.alias or name
        annotation = field.annotation
        for sub in _models_in(annotation):
            if sub.__name__ not in definitions:
                definitions[sub.__name__] = {}  # placeholder against recursion
                definitions[sub.__name__] = _model_schema(sub, definitions)
        schema = dict(_leaf(annotation))
        if field.description:
            schema["description"] = field.description
        properties[key] = schema
    return {"type": "object", "additionalProperties": False, "properties": properties}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found += _models_in(arg)
    return found


def sidecar_config_schema() -> JSONSchema:
    """The sidecar config's keys as JSON Schema (draft 7): every section and nested
    model with additionalProperties false, scalars loose."""
    from tickscope.agent.config import Config

    definitions: dict[str, JSONSchema] = {}
    root = _model_schema(Config, definitions)
    return {
        "description": "The sidecar's configuration (docs/configuration.md), merged over what "
        "the chart sets. Generated from the sidecar's config models by "
        "scripts/sync-chart-files.py: unknown keys are refused here, values are checked by "
        "the sidecar at startup.",
        **root,
        "definitions": dict(sorted(definitions.items())),
    }


def planned_schema() -> bytes | None:
    """values.schema.json with its generated part current; None when the file does not
    exist yet (it is written by hand, apart from definitions.sidecarConfig)."""
    if not SCHEMA.exists():
        return None
    document = json.loads(SCHEMA.read_text())
    document.setdefault("definitions", {})["sidecarConfig"] = sidecar_config_schema()
    return (json.dumps(document, indent=2, ensure_ascii=False) + "\n").encode()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)

    wanted = planned_copies()
    stale: list[str] = []
    for path, content in wanted.items():
        if not path.exists() or path.read_bytes() != content:
            stale.append(f"{path.relative_to(ROOT)}: missing or different")
            if not args.check:
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(content)
    for _, pattern, target in COPIES:
        for path in sorted(target.glob(pattern)):
            if path not in wanted:
                stale.append(f"{path.relative_to(ROOT)}: no longer in the source folder")
                if not args.check:
                    path.unlink()
    schema = planned_schema()
    if schema is None:
        stale.append(f"{SCHEMA.relative_to(ROOT)}: missing")
    elif SCHEMA.read_bytes() != schema:
        stale.append(f"{SCHEMA.relative_to(ROOT)}: definitions.sidecarConfig not current")
        if not args.check:
            SCHEMA.write_bytes(schema)

    if args.check:
        for line in stale:
            print(f"stale: {line}", file=sys.stderr)
        if stale:
            print("run: .venv/bin/python scripts/sync-chart-files.py", file=sys.stderr)
        return 1 if stale else 0
    for line in stale:
        print(f"updated: {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
