"""docs/kubernetes.md's values reference, generated from the chart's values.schema.json
(the descriptions and types) and values.yaml (the defaults).

    python scripts/chart_values_doc.py           # rewrite the table in docs/kubernetes.md
    python scripts/chart_values_doc.py --check   # exit 1 if it is not current

`sidecar.config` is one row: its keys are the sidecar's, in docs/configuration.md.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "helm" / "tickscope"
DOC = ROOT / "docs" / "kubernetes.md"
BEGIN = "<!-- BEGIN GENERATED: scripts/chart_values_doc.py -->"
END = "<!-- END GENERATED -->"

# Objects documented as one row (with their keys named) although their schema has
# properties: the sidecar's config (docs/configuration.md has it), images, resources, probes.
OPAQUE = {"sidecar.config"}
OPAQUE_REFS = {"#/definitions/image", "#/definitions/resources", "#/definitions/probeTiming"}

Schema = dict[str, Any]


def _resolve(schema: Schema, root: Schema) -> Schema:
    """Follow a local $ref, keeping the referring node's own description."""
    ref = schema.get("$ref")
    if not isinstance(ref, str):
        return schema
    target: Any = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**_resolve(target, root), **{k: v for k, v in schema.items() if k != "$ref"}}


def _type(schema: Schema) -> str:
    kind = schema.get("type")
    if "enum" in schema:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in schema["enum"])
    if isinstance(kind, list):
        return " \\| ".join(kind)
    return str(kind or "any")


def _default(value: Any) -> str:
    if value is None:
        return "`null`"
    text = json.dumps(value, separators=(", ", ": "), ensure_ascii=False)
    if len(text) > 70:
        text = text[:67] + "..."
    return "`" + text.replace("|", "\\|") + "`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def rows(schema: Schema, defaults: Any, root: Schema, prefix: str = "") -> list[str]:
    out: list[str] = []
    properties: dict[str, Schema] = schema.get("properties", {})
    for key, node in properties.items():
        path = f"{prefix}{key}"
        opaque = path in OPAQUE or node.get("$ref") in OPAQUE_REFS
        node = _resolve(node, root)
        value = defaults.get(key) if isinstance(defaults, dict) else None
        children = node.get("properties")
        if children and not opaque and node.get("type") == "object":
            out += rows(node, value if isinstance(value, dict) else {}, root, path + ".")
            continue
        description = _cell(node.get("description", ""))
        if children and path not in OPAQUE:
            description += " Keys: " + ", ".join(f"`{k}`" for k in children) + "."
        out.append(f"| `{path}` | {_type(node)} | {_default(value)} | {description} |")
    return out


def table() -> str:
    schema: Schema = json.loads((CHART / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    lines = ["| key | type | default | meaning |", "|---|---|---|---|"]
    lines += rows(schema, defaults, schema)
    return "\n".join(lines)


def render(document: str) -> str:
    start = document.index(BEGIN) + len(BEGIN)
    stop = document.index(END, start)
    return document[:start] + "\n" + table() + "\n" + document[stop:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    current = DOC.read_text()
    wanted = render(current)
    if args.check:
        if wanted != current:
            print(
                f"{DOC.relative_to(ROOT)}: the values reference is not current; run "
                "python scripts/chart_values_doc.py",
                file=sys.stderr,
            )
            return 1
        return 0
    if wanted != current:
        DOC.write_text(wanted)
        print(f"updated {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
