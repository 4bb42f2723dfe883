"""Check Grafana dashboard JSON files against Grafana's own published dashboard type.

No Grafana server runs here, but Grafana publishes its dashboard model as TypeScript
types in the npm package `@grafana/schema` (dashboards/schema/ pins it and typescript,
scripts/install-node-deps.sh installs them). Each dashboard becomes a TypeScript file

    export const d = (<the JSON, verbatim>) satisfies DashboardJson;

and one `tsc --noEmit --strict --skipLibCheck` run checks them all. `satisfies` on an
object literal refuses unknown keys (a misspelt `targets`), wrong scalar types and
missing required fields (a gridPos without `h`), which the Foundation SDK's own
parser drops silently. DashboardJson is Grafana's `Dashboard` (the JSON model whose
panels hold `targets` and `gridPos`) with each string enum read as its values: a JSON
file holds `"absolute"`, never `ThresholdsMode.Absolute`, and TypeScript's string
enums accept only the latter.

tsc's errors are mapped back to the dashboard file, its line and column, and the JSON
path of the offending key (`panels[3].targets`).

    python scripts/check_dashboard_schema.py dashboards/*.json
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_DIR = ROOT / "dashboards" / "schema"
PACKAGE = "@grafana/schema"

# The type the dashboards are checked against: Grafana's Dashboard, read as JSON (`${E}`
# turns a string enum E into the union of its values; numeric enums already accept
# their values as number literals), with annotation targets open to the datasource's
# query fields as panel targets are.
TYPES_MODULE = "dashboard-json"
TYPES_TS = """\
import type { AnnotationContainer, AnnotationQuery, Dashboard, DataQuery } from '@grafana/schema';

export type Json<T> = T extends string
  ? `${T}`
  : T extends number | boolean | null | undefined
    ? T
    : T extends Array<infer U>
      ? Array<Json<U>>
      : T extends object
        ? { [K in keyof T]: Json<T[K]> }
        : T;

// An annotation's target is its datasource's query (a Prometheus one holds `expr`), open
// as a panel's targets are: @grafana/schema types it by a parameter, DataQuery by default.
type Annotations = Omit<AnnotationContainer, 'list'> & {
  list?: Array<AnnotationQuery<DataQuery & Record<string, unknown>>>;
};

export type DashboardJson = Json<Omit<Dashboard, 'annotations'> & { annotations?: Annotations }>;
"""
# Two lines before the JSON, which starts at column 1 of line 3: tsc's line N is the
# JSON's line N - 2.
HEADER = f"import type {{ DashboardJson }} from './{TYPES_MODULE}';\nexport const d = (\n"
HEADER_LINES = 2
FOOTER = "\n) satisfies DashboardJson;\n"

TSC_FLAGS = [
    "--noEmit",
    "--strict",
    "--skipLibCheck",
    "--pretty",
    "false",
    "--target",
    "es2022",
    "--module",
    "nodenext",
]
TSC_TIMEOUT_S = 120.0

_DIAGNOSTIC = re.compile(
    r"^(?P<file>.+?)\((?P<line>\d+),(?P<col>\d+)\): error (?P<code>TS\d+): (?P<msg>.*)$"
)
_GLOBAL_DIAGNOSTIC = re.compile(r"^error (?P<code>TS\d+): (?P<msg>.*)$")
# tsc spells out anonymous object types in full: keep messages readable.
_LONG_OBJECT_TYPE = re.compile(r"'\{[^']{40,}'")
# Line terminators as TypeScript's scanner counts them.
_TS_NEWLINE = re.compile(r"\r\n|[\r\n\u2028\u2029]")
_WS = re.compile(r"[ \t\n\r]*")
_STRING = re.compile(r'"(?:[^"\\\x00-\x1f]|\\.)*"')
_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][-+]?\d+)?")
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")


class ToolMissing(RuntimeError):
    """node, tsc or @grafana/schema is not installed (scripts/install-node-deps.sh)."""


@dataclass(frozen=True)
class SchemaError:
    """One problem in one dashboard file. line and column are 1-based, 0 when unknown."""

    file: Path
    line: int
    column: int
    json_path: str
    code: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}" if self.line else str(self.file)
        path = f" {self.json_path}:" if self.json_path else ""
        code = f" [{self.code}]" if self.code else ""
        return f"{where}:{path} {self.message}{code}"


def _pinned_version() -> str:
    manifest = json.loads((SCHEMA_DIR / "package.json").read_text())
    return str(manifest["devDependencies"][PACKAGE])


def schema_version() -> str:
    """The installed @grafana/schema's version; ToolMissing when absent or not the pinned one."""
    installed = SCHEMA_DIR / "node_modules" / "@grafana" / "schema" / "package.json"
    if not installed.is_file():
        raise ToolMissing(
            f"{PACKAGE} is not installed in {SCHEMA_DIR}: run scripts/install-node-deps.sh"
        )
    version = str(json.loads(installed.read_text())["version"])
    pinned = _pinned_version()
    if version != pinned:
        raise ToolMissing(
            f"{PACKAGE} {version} is installed but {pinned} is pinned: run scripts/install-node-deps.sh"
        )
    return version


def tsc_command() -> list[str]:
    """node and the project's own tsc; ToolMissing when either is absent."""
    node = shutil.which("node") or shutil.which("nodejs")
    if node is None:
        raise ToolMissing("node is not installed: run scripts/install-node-deps.sh")
    tsc = SCHEMA_DIR / "node_modules" / "typescript" / "bin" / "tsc"
    if not tsc.is_file():
        raise ToolMissing(
            f"typescript is not installed in {SCHEMA_DIR}: run scripts/install-node-deps.sh"
        )
    return [node, str(tsc)]


def _key_path(parent: str, key: str) -> str:
    if _IDENTIFIER.fullmatch(key):
        return f"{parent}.{key}" if parent else key
    return f"{parent}[{json.dumps(key)}]"


def json_spans(text: str) -> list[tuple[int, int, str]]:
    """(start, end, path) of every member (from its key) and array element of a JSON text."""
    spans: list[tuple[int, int, str]] = []

    def skip(i: int) -> int:
        match = _WS.match(text, i)
        assert match is not None
        return match.end()

    def string(i: int) -> tuple[str, int]:
        match = _STRING.match(text, i)
        if match is None:
            raise ValueError(f"expected a string at offset {i}")
        return str(json.loads(match.group())), match.end()

    def value(i: int, path: str) -> int:
        i = skip(i)
        char = text[i]
        if char == "{":
            i = skip(i + 1)
            if text[i] == "}":
                return i + 1
            while True:
                start = i
                key, i = string(i)
                i = skip(i)
                if text[i] != ":":
                    raise ValueError(f"expected ':' at offset {i}")
                child = _key_path(path, key)
                i = value(i + 1, child)
                spans.append((start, i, child))
                i = skip(i)
                if text[i] == "}":
                    return i + 1
                if text[i] != ",":
                    raise ValueError(f"expected ',' or '}}' at offset {i}")
                i = skip(i + 1)
        if char == "[":
            i = skip(i + 1)
            if text[i] == "]":
                return i + 1
            index = 0
            while True:
                i = skip(i)
                start = i
                child = f"{path}[{index}]"
                i = value(i, child)
                spans.append((start, i, child))
                index += 1
                i = skip(i)
                if text[i] == "]":
                    return i + 1
                if text[i] != ",":
                    raise ValueError(f"expected ',' or ']' at offset {i}")
                i += 1
        if char == '"':
            return string(i)[1]
        for literal in ("true", "false", "null"):
            if text.startswith(literal, i):
                return i + len(literal)
        number = _NUMBER.match(text, i)
        if number is None:
            raise ValueError(f"unexpected {char!r} at offset {i}")
        return number.end()

    value(0, "")
    return spans


class _Located:
    """Maps tsc's (line, column) in the generated file to the JSON file's line, column and path."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.ts_line_starts = [0] + [m.end() for m in _TS_NEWLINE.finditer(text)]
        self.spans = json_spans(text)

    def locate(self, ts_line: int, ts_column: int) -> tuple[int, int, str]:
        json_line = ts_line - HEADER_LINES
        if not 1 <= json_line <= len(self.ts_line_starts):
            return 0, 0, ""
        offset = min(self.ts_line_starts[json_line - 1] + ts_column - 1, len(self.text))
        line = self.text.count("\n", 0, offset) + 1
        column = offset - (self.text.rfind("\n", 0, offset) + 1) + 1
        path = ""
        deepest = -1
        for start, end, span_path in self.spans:
            if start <= offset < end and start > deepest:
                deepest, path = start, span_path
        return line, column, path


def _shorten(message: str) -> str:
    return _LONG_OBJECT_TYPE.sub("'{…}'", message)


def _parse_tsc_output(output: str) -> list[tuple[str, int, int, str, str]]:
    """(file, line, column, code, message) per diagnostic; file '' for global ones."""
    found: list[tuple[str, int, int, str, str]] = []
    for raw in output.splitlines():
        if not raw.strip():
            continue
        match = _DIAGNOSTIC.match(raw)
        if match:
            found.append(
                (
                    match["file"],
                    int(match["line"]),
                    int(match["col"]),
                    match["code"],
                    match["msg"],
                )
            )
            continue
        match = _GLOBAL_DIAGNOSTIC.match(raw)
        if match:
            found.append(("", 0, 0, match["code"], match["msg"]))
        elif found:
            # An elaboration of the diagnostic before it, indented by tsc.
            file, line, column, code, message = found[-1]
            found[-1] = (file, line, column, code, f"{message} {raw.strip()}")
        else:
            found.append(("", 0, 0, "", raw.strip()))
    return found


def check_errors(paths: list[Path], keep_dir: Path | None = None) -> list[SchemaError]:
    """Every problem tsc finds in the dashboards at paths, in one tsc run.

    Raises ToolMissing when node, tsc or @grafana/schema is not installed. The generated
    TypeScript goes to a fresh folder in dashboards/schema/ (where node_modules is) that
    is removed afterwards, or to keep_dir when given.
    """
    command = tsc_command()
    schema_version()
    errors: list[SchemaError] = []
    sources: dict[str, tuple[Path, _Located]] = {}
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8").removeprefix("\ufeff")
            json.loads(text)
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(SchemaError(path, 0, 0, "", "", f"cannot read: {exc}"))
            continue
        except json.JSONDecodeError as exc:
            errors.append(
                SchemaError(path, exc.lineno, exc.colno, "", "", f"invalid JSON: {exc.msg}")
            )
            continue
        sources[f"{len(sources):03d}-{_slug(path)}.ts"] = (path, _Located(text))
    if not sources:
        return errors

    work = (
        Path(tempfile.mkdtemp(prefix=".check-", dir=SCHEMA_DIR)) if keep_dir is None else keep_dir
    )
    try:
        work.mkdir(parents=True, exist_ok=True)
        (work / f"{TYPES_MODULE}.ts").write_text(TYPES_TS)
        for name, (_, located) in sources.items():
            (work / name).write_text(HEADER + located.text + FOOTER, encoding="utf-8")
        try:
            proc = subprocess.run(
                [*command, *TSC_FLAGS, *sources],
                cwd=work,
                capture_output=True,
                text=True,
                timeout=TSC_TIMEOUT_S,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"tsc did not finish in {TSC_TIMEOUT_S:.0f} s") from exc
    finally:
        if keep_dir is None:
            shutil.rmtree(work, ignore_errors=True)

    diagnostics = _parse_tsc_output(proc.stdout + proc.stderr)
    for file, ts_line, ts_column, code, message in diagnostics:
        name = Path(file).name if file else ""
        if name in sources:
            path, located = sources[name]
            line, column, json_path = located.locate(ts_line, ts_column)
            errors.append(SchemaError(path, line, column, json_path, code, _shorten(message)))
        else:
            # Not in a dashboard (an install problem, a tsc option): never a silent pass.
            errors.append(SchemaError(Path(file or "tsc"), ts_line, ts_column, "", code, message))
    if proc.returncode != 0 and not diagnostics:
        errors.append(
            SchemaError(Path("tsc"), 0, 0, "", "", f"exited {proc.returncode} without diagnostics")
        )
    return errors


def _slug(path: Path) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", path.stem) or "dashboard"


def check(paths: list[Path]) -> list[str]:
    """Every problem in the dashboards at paths, one line each ("file:line:col: json.path: message")."""
    return [str(error) for error in check_errors(paths)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dashboards", nargs="+", type=Path, help="dashboard JSON files")
    parser.add_argument("--keep", type=Path, help="write the generated TypeScript here and keep it")
    args = parser.parse_args(argv)
    try:
        version = schema_version()
        errors = check_errors(args.dashboards, keep_dir=args.keep)
    except ToolMissing as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if errors:
        for error in errors:
            print(error)
        failed = len({error.file for error in errors})
        print(
            f"{failed} of {len(args.dashboards)} dashboards do not satisfy {PACKAGE} {version} Dashboard",
            file=sys.stderr,
        )
        return 1
    print(f"{len(args.dashboards)} dashboards satisfy {PACKAGE} {version} Dashboard")
    return 0


if __name__ == "__main__":
    sys.exit(main())
