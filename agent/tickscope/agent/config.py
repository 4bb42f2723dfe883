"""The sidecar's whole configuration: a YAML file, overridden by environment variables.

Precedence, lowest first: built-in defaults (enough to run with no file at all),
the YAML file, then TICKSCOPE_<SECTION>__<KEY>[__<KEY>...] environment variables.
An env value that starts with `[` or `{` is read as JSON (lists of processes);
any other value is a string that pydantic converts ("9464" -> 9464, "true" -> True).

Unknown keys are errors, in the file and in env vars under a known section.
Env vars whose first part is not a section are ignored: Kubernetes injects
TICKSCOPE_PORT, TICKSCOPE_SERVICE_HOST, ... into pods when a Service is named
tickscope, and those must not stop the sidecar from starting.
"""

from __future__ import annotations

import json
import os
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Self

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from tickscope.agent.logs import LoggingConfig
from tickscope.agent.server import ServerConfig
from tickscope.collectors.engine.config import EngineConfig
from tickscope.collectors.host.config import HostConfig
from tickscope.connectors.spanmetrics import SpanMetricsConfig
from tickscope.connectors.trading import TradingConfig
from tickscope.core.configtypes import Duration, StrictModel
from tickscope.exporters.forward import ForwardConfig
from tickscope.exporters.otlpmetrics import MetricsConfig
from tickscope.receivers.config import ReceiverConfig

__all__ = ["Config", "ConfigError", "LimitsConfig", "load_config"]

ENV_PREFIX = "TICKSCOPE_"
ENV_NESTING = "__"


class LimitsConfig(StrictModel):
    queue_capacity_spans: int = Field(
        32768,
        ge=1,
        le=10_000_000,
        description="Spans the pipeline queue holds between the receivers and the span "
        "metrics; past it, receivers answer 429 / RESOURCE_EXHAUSTED with a retry delay.",
    )
    collect_timeout: Duration = Field(
        10.0,
        description="A collection still running after this long is abandoned and counted "
        "in tickscope_collect_errors_total; the last snapshot is served until it is older "
        "than three intervals plus this timeout.",
    )


class Config(StrictModel):
    server: ServerConfig = ServerConfig()
    receiver: ReceiverConfig = ReceiverConfig()
    host: HostConfig = HostConfig()
    engine: EngineConfig = EngineConfig()
    spanmetrics: SpanMetricsConfig = SpanMetricsConfig()
    trading: TradingConfig = TradingConfig()
    forward: ForwardConfig = ForwardConfig()
    metrics: MetricsConfig = MetricsConfig()
    limits: LimitsConfig = LimitsConfig()
    logging: LoggingConfig = LoggingConfig()

    @model_validator(mode="after")
    def _ports_distinct(self) -> Self:
        listeners = [("server.port", self.server.port)]
        if self.receiver.http.enabled:
            listeners.append(("receiver.http.port", self.receiver.http.port))
        if self.receiver.grpc.enabled:
            listeners.append(("receiver.grpc.port", self.receiver.grpc.port))
        seen: dict[int, str] = {}
        for key, port in listeners:
            if port == 0:
                continue  # each 0 gets its own free port
            if port in seen:
                raise ValueError(f"{key} and {seen[port]} are both {port}; each needs its own port")
            seen[port] = key
        return self


SECTIONS = frozenset(Config.model_fields)


class ConfigError(Exception):
    """The configuration is unusable; `problems` holds one line per error."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping: PyYAML would
    silently keep the last, and a config that says two things means neither."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            mark = key_node.start_mark
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def read_yaml(path: str) -> dict[str, Any]:
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from None
    if data is None:
        return {}  # an empty file means "all defaults"
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}: the top level must be a mapping of sections, got {type(data).__name__}"]
        )
    return data


def env_overrides(environ: Mapping[str, str]) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
    """The nested dict the env vars describe, and which var set each path."""
    tree: dict[str, Any] = {}
    origin: dict[tuple[str, ...], str] = {}
    for var in sorted(environ):
        if not var.startswith(ENV_PREFIX):
            continue
        path = tuple(var[len(ENV_PREFIX) :].lower().split(ENV_NESTING))
        if len(path) < 2 or path[0] not in SECTIONS or not all(path):
            continue  # not ours (see the module docstring)
        raw = environ[var]
        value: Any = raw
        if raw.lstrip()[:1] in ("[", "{"):
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    [f"{var}: not valid JSON: {exc.msg} at column {exc.colno}"]
                ) from None
        node = tree
        for key in path[:-1]:
            child = node.setdefault(key, {})
            if not isinstance(child, dict):
                raise ConfigError([f"{var}: conflicts with another variable that sets {key}"])
            node = child
        node[path[-1]] = value
        origin[path] = var
    return tree, origin


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _format_loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out or "(top level)"


def _model_at(loc: tuple[int | str, ...]) -> type[BaseModel] | None:
    """The config model class that holds the mapping at `loc`, if any."""
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return None
        field = model.model_fields.get(part)
        if field is None:
            return None
        model = _unwrap(field.annotation)
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _unwrap(annotation: Any) -> Any:
    """list[X] -> X, X | None -> X: the model a list or optional field holds."""
    origin = typing.get_origin(annotation)
    if origin in (list, tuple):
        return _unwrap(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return _unwrap(args[0]) if len(args) == 1 else annotation
    return annotation


def _problems(exc: ValidationError, origin: Mapping[tuple[str, ...], str]) -> list[str]:
    problems = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        msg = error["msg"]
        if error["type"] == "extra_forbidden":
            parent = _model_at(loc[:-1])
            allowed = f" (expected one of: {', '.join(parent.model_fields)})" if parent else ""
            msg = f"unknown key{allowed}"
        elif msg.startswith("Value error, "):
            msg = msg[len("Value error, ") :]
        line = f"{_format_loc(loc)}: {msg}"
        var = origin.get(tuple(str(p) for p in loc))
        if var is not None:
            line += f" (from {var})"
        problems.append(line)
    return problems


def load_config(path: str | None = None, environ: Mapping[str, str] | None = None) -> Config:
    """Build the configuration, or raise ConfigError listing every problem."""
    env = os.environ if environ is None else environ
    data = read_yaml(path) if path else {}
    overrides, origin = env_overrides(env)
    try:
        return Config.model_validate(_merge(data, overrides))
    except ValidationError as exc:
        raise ConfigError(_problems(exc, origin)) from None
