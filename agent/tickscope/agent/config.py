"""The sidecar's whole configuration: a YAML file, overridden by environment variables.

Precedence, lowest first: built-in defaults (enough to run with no file at all),
the YAML file, then TICKSCOPE_<SECTION>__<KEY>[__<KEY>...] environment variables.
An env value that starts with `[` or `{` is read as JSON (lists of processes);
any other value is a string that pydantic converts ("9464" -> 9464, "true" -> True).

Unknown keys are errors, in the file and in env vars under a known section.
Env vars whose first part is not a section are ignored: Kubernetes injects
TICKSCOPE_PORT, TICKSCOPE_SERVICE_HOST, ... into pods when a Service is named
tickscope, and those must not stop the sidecar from starting.

What is read is bounded before it is parsed, so that check-config answers every
input with a one-line message and exit 2, never a traceback or an exhausted
memory: the file must be a regular file (not /dev/zero or a FIFO) of at most
DEFAULT_MAX_CONFIG_BYTES, and neither YAML nor env JSON may nest deeper than
DEFAULT_MAX_CONFIG_DEPTH (PyYAML's composer and json recurse, and raised
RecursionError thousands of levels down). Both are flags of `run` and
`check-config` (--config-max-bytes, --config-max-depth): they bound the file
itself, so they cannot live in it.
"""

from __future__ import annotations

import json
import os
import stat
import sys
import types
import typing
from collections.abc import Mapping
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

__all__ = [
    "DEFAULT_MAX_CONFIG_BYTES",
    "DEFAULT_MAX_CONFIG_DEPTH",
    "Config",
    "ConfigError",
    "LimitsConfig",
    "load_config",
]

ENV_PREFIX = "TICKSCOPE_"
ENV_NESTING = "__"

# The largest config file read: 1 MiB. The reference config with every key set is
# about 6 KiB; a file a hundred times larger is a mistake (or /dev/zero).
DEFAULT_MAX_CONFIG_BYTES = 1 << 20
# The deepest nesting of mappings and lists, counted from the top level: 32. The
# deepest key the models have is 4 levels down (engine.processes[0].cmdline);
# PyYAML's composer recursed into RecursionError at ~1,000 levels.
DEFAULT_MAX_CONFIG_DEPTH = 32


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

    @model_validator(mode="after")
    def _heartbeats_have_a_source(self) -> Self:
        # /engine/healthz reads the heartbeats from the OTLP metrics the shim sends.
        if self.engine.heartbeats:
            receiving = self.receiver.http.enabled or self.receiver.grpc.enabled
            if not (self.metrics.enabled and receiving):
                raise ValueError(
                    "engine.heartbeats needs the OTLP metrics the shim sends: metrics.enabled "
                    "and receiver.http or receiver.grpc enabled"
                )
        return self


SECTIONS = frozenset(Config.model_fields)


class ConfigError(Exception):
    """The configuration is unusable; `problems` holds one line per error."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects a key given twice in one mapping (PyYAML would
    silently keep the last, and a config that says two things means neither), an
    unhashable key, a node nested deeper than `max_depth` and an integer too long
    to convert, each as a YAMLError with its position."""

    max_depth = DEFAULT_MAX_CONFIG_DEPTH
    _depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        # The composer recurses once per level; refuse before Python's stack runs out.
        # Mappings and lists count (scalars nest nothing), as in _too_deep.
        if not self.check_event(yaml.MappingStartEvent, yaml.SequenceStartEvent):
            return super().compose_node(parent, index)
        if self._depth >= self.max_depth:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"nested deeper than {self.max_depth} levels",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        mark = key_node.start_mark
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"a {type(key).__name__} cannot be a key; keys are names such as port",
                mark,
            ) from None
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (line {mark.line + 1})", mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


def _construct_int(loader: _UniqueKeyLoader, node: yaml.ScalarNode) -> int:
    try:
        return loader.construct_yaml_int(node)
    except ValueError:
        # int() refuses more than sys.get_int_max_str_digits() digits (4300) with a
        # ValueError that PyYAML does not turn into a YAMLError.
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"integer of {len(str(node.value))} characters is too long "
            f"(at most {sys.get_int_max_str_digits()} digits)",
            node.start_mark,
        ) from None


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)
_UniqueKeyLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"


def _read_bounded(path: str, max_bytes: int) -> bytes:
    """At most `max_bytes` of the regular file at `path`, or ConfigError.

    Read whole, /dev/zero never ends; a FIFO blocks until a writer comes. The path
    is stat'ed first, then opened O_NONBLOCK and checked again on the descriptor
    (it may be swapped in between), and at most max_bytes + 1 bytes are read, so a
    file that grows meanwhile is still caught.
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise ConfigError([f"{path}: is {_file_kind(st.st_mode)}, not a regular file"])
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                raise ConfigError([f"{path}: is {_file_kind(mode)}, not a regular file"])
            chunks: list[bytes] = []
            left = max_bytes + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
        finally:
            os.close(fd)
    except FileNotFoundError:
        raise ConfigError([f"{path}: no such file"]) from None
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read: {exc.strerror or exc}"]) from None
    raw = b"".join(chunks)
    if len(raw) > max_bytes:
        raise ConfigError(
            [f"{path}: larger than {max_bytes} bytes (the limit; see --config-max-bytes)"]
        )
    return raw


def read_yaml(
    path: str,
    max_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
    max_depth: int = DEFAULT_MAX_CONFIG_DEPTH,
) -> dict[str, Any]:
    raw = _read_bounded(path, max_bytes)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    loader: _UniqueKeyLoader | None = None
    try:
        loader = _UniqueKeyLoader(text)  # its Reader refuses control characters here
        loader.max_depth = max_depth
        data = loader.get_single_data()
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{path}: not valid YAML{where}: {problem}"]) from None
    finally:
        if loader is not None:
            loader.dispose()
    if data is None:
        return {}  # an empty file means "all defaults"
    if not isinstance(data, dict):
        raise ConfigError(
            [f"{path}: the top level must be a mapping of sections, got {type(data).__name__}"]
        )
    return data


def _json_depth(text: str) -> int:
    """How deep `text`'s brackets nest, outside strings: checked before json.loads,
    whose decoder recurses once per level."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest


def _too_deep(data: Any, max_depth: int) -> bool:
    """Whether mappings and lists in `data` nest deeper than `max_depth`. YAML aliases
    can nest deeper than any one composed node (&b [*a], &c [*b], ...) and share
    nodes, so each container is measured once (by id) and the walk is iterative."""
    height: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:
        node, done = stack.pop()
        if not isinstance(node, dict | list) or (not done and id(node) in height):
            continue
        children = list(node.values()) if isinstance(node, dict) else node
        if done:
            h = 1 + max((height.get(id(c), 0) for c in children), default=0)
            if h > max_depth:
                return True
            height[id(node)] = h
        else:
            height[id(node)] = 0  # in progress: a cycle (only via aliases) counts as 0
            stack.append((node, True))
            stack.extend((c, False) for c in children if isinstance(c, dict | list))
    return False


def env_overrides(
    environ: Mapping[str, str], max_depth: int = DEFAULT_MAX_CONFIG_DEPTH
) -> tuple[dict[str, Any], dict[tuple[str, ...], str]]:
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
            # The variable's own path counts: the top level and each section or key
            # above its value are len(path) mappings, so its JSON starts below them.
            allowed = max_depth - len(path)
            if _json_depth(raw) > allowed:
                raise ConfigError([f"{var}: JSON nested deeper than {max_depth} levels in all"])
            try:
                value = json.loads(raw)
            except json.JSONDecodeError as exc:
                raise ConfigError(
                    [f"{var}: not valid JSON: {exc.msg} at column {exc.colno}"]
                ) from None
            except ValueError:
                # int() refuses more than 4300 digits, outside JSONDecodeError.
                raise ConfigError(
                    [
                        f"{var}: not valid JSON: an integer longer than "
                        f"{sys.get_int_max_str_digits()} digits"
                    ]
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
            out += ("." if out else "") + str(part)
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


def load_config(
    path: str | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    max_bytes: int = DEFAULT_MAX_CONFIG_BYTES,
    max_depth: int = DEFAULT_MAX_CONFIG_DEPTH,
) -> Config:
    """Build the configuration, or raise ConfigError listing every problem.

    `max_bytes` bounds the file, `max_depth` the nesting of the file, of each env
    JSON value and of the two merged (see the module docstring)."""
    env = os.environ if environ is None else environ
    data = read_yaml(path, max_bytes, max_depth) if path else {}
    overrides, origin = env_overrides(env, max_depth)
    merged = _merge(data, overrides)
    if _too_deep(merged, max_depth):
        raise ConfigError([f"{path or 'the configuration'}: nested deeper than {max_depth} levels"])
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, origin)) from None
