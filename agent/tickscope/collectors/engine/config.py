"""Configuration of the engine-process collector."""

from __future__ import annotations

import os
from typing import Annotated, Self

from pydantic import AfterValidator, Field, field_validator, model_validator

from tickscope.collectors.engine.heartbeat import HeartbeatConfig
from tickscope.collectors.engine.quantity import parse_quantity
from tickscope.core.configtypes import Duration, Regex, StrictModel

__all__ = ["EngineConfig", "EngineProcessConfig", "HeartbeatConfig"]

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


def _absolute(path: str) -> str:
    # A relative root would depend on the directory the sidecar starts in.
    if not path.startswith("/"):
        raise ValueError(f"must be an absolute path, got {path!r}")
    return os.path.normpath(path)


class EngineProcessConfig(StrictModel):
    """One watched process. Exactly one of process_name, cmdline, pid_file finds it."""

    name: str = Field(
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9_.:\-]+$",
        description="The `process` label on this process's engine_process_* series.",
    )
    process_name: str | None = Field(
        None,
        min_length=1,
        description="Match the process name (as `ps -o comm`, not truncated) exactly.",
    )
    cmdline: Regex | None = Field(
        None, description="Match a regex searched in the command line, arguments joined by spaces."
    )
    pid_file: str | None = Field(
        None,
        min_length=1,
        description="Read the PID from this file, re-read every interval; a missing file "
        "means not running.",
    )
    required: bool = Field(
        True, description="When true, /readyz answers 503 while the process is not running."
    )
    memory_limit_env: EnvName = Field(
        "ENGINE_MEMORY_LIMIT",
        description="Env var holding the engine container's memory limit (downward API "
        "resourceFieldRef limits.memory); unset means unknown.",
    )
    cpu_limit_env: EnvName = Field(
        "ENGINE_CPU_LIMIT",
        description="Env var holding the engine container's CPU limit (resourceFieldRef "
        "limits.cpu).",
    )
    cpu_limit_divisor: str = Field(
        "1",
        description="The divisor the resourceFieldRef of the CPU env var uses: with divisor "
        "1m the downward API writes millicores, and 1m here turns them back into cores.",
    )

    @field_validator("cpu_limit_divisor")
    @classmethod
    def _divisor_is_quantity(cls, value: str) -> str:
        if parse_quantity(value) <= 0:
            raise ValueError("must be greater than 0")
        return value

    @model_validator(mode="after")
    def _exactly_one_matcher(self) -> Self:
        given = [
            key for key in ("process_name", "cmdline", "pid_file") if getattr(self, key) is not None
        ]
        if len(given) != 1:
            raise ValueError(
                "set exactly one of process_name, cmdline, pid_file"
                + (f" (got {', '.join(given)})" if given else "")
            )
        return self

    def describe_match(self) -> str:
        if self.process_name is not None:
            return f"process name {self.process_name!r}"
        if self.cmdline is not None:
            return f"command line matching {self.cmdline.pattern!r}"
        return f"pid file {self.pid_file}"


class EngineConfig(StrictModel):
    interval: Duration = Field(
        2.0,
        description="Collection interval; a restarted process is found again within one.",
    )
    procfs: Annotated[str, AfterValidator(_absolute)] = Field(
        "/proc",
        description="The proc filesystem the processes are found and read in: /proc, or "
        "another PID namespace's /proc mounted into the container.",
    )
    processes: list[EngineProcessConfig] = Field(
        default_factory=list,
        max_length=64,
        description="The processes to watch; exactly one of process_name, cmdline and "
        "pid_file finds each.",
    )
    heartbeats: list[HeartbeatConfig] = Field(
        default_factory=list,
        max_length=64,
        description="The engine loops GET /engine/healthz requires heartbeats from "
        "(shim.heartbeat or shim.loop, through OTLP metrics): 200 while each last beat is "
        "fresher than its max_age, 503 naming the stale loops; empty: 200 with a note. "
        "The Helm chart makes it the engine container's liveness probe.",
    )

    @field_validator("processes")
    @classmethod
    def _unique_names(cls, processes: list[EngineProcessConfig]) -> list[EngineProcessConfig]:
        seen: set[str] = set()
        for proc in processes:
            if proc.name in seen:
                raise ValueError(f"process name {proc.name!r} is used twice; names must be unique")
            seen.add(proc.name)
        return processes

    @field_validator("heartbeats")
    @classmethod
    def _unique_loops(cls, heartbeats: list[HeartbeatConfig]) -> list[HeartbeatConfig]:
        seen: set[str] = set()
        for hb in heartbeats:
            if hb.loop in seen:
                raise ValueError(f"loop {hb.loop!r} is listed twice; each loop once")
            seen.add(hb.loop)
        return heartbeats
