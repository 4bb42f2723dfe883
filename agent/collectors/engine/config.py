"""Configuration of the engine-process collector."""

from __future__ import annotations

from typing import Annotated, Self

from pydantic import Field, field_validator, model_validator

from agent.collectors.engine.quantity import parse_quantity
from agent.configtypes import Duration, Regex, StrictModel

__all__ = ["EngineConfig", "EngineProcessConfig"]

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]


class EngineProcessConfig(StrictModel):
    """One watched process. Exactly one of process_name, cmdline, pid_file finds it."""

    # The `process` label on every engine_process_* series.
    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:\-]+$")
    # Matches the process's name (what ps -o comm shows, not truncated) exactly.
    process_name: str | None = Field(default=None, min_length=1)
    # Searched for in the command line, its arguments joined by single spaces.
    cmdline: Regex | None = None
    # A file holding the process's PID; a missing file means "not running".
    pid_file: str | None = Field(default=None, min_length=1)
    # A required process that is not running makes /readyz answer 503.
    required: bool = True
    # Env vars filled by the Kubernetes downward API (resourceFieldRef of the
    # engine container's limits.memory and limits.cpu); unset means no limit known.
    memory_limit_env: EnvName = "ENGINE_MEMORY_LIMIT"
    cpu_limit_env: EnvName = "ENGINE_CPU_LIMIT"
    # The resourceFieldRef divisor used for the CPU env var: with divisor "1m" the
    # downward API writes millicores, and "1m" here turns them back into cores.
    cpu_limit_divisor: str = "1"

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
    interval: Duration = 2.0
    processes: list[EngineProcessConfig] = Field(default_factory=list, max_length=64)

    @field_validator("processes")
    @classmethod
    def _unique_names(cls, processes: list[EngineProcessConfig]) -> list[EngineProcessConfig]:
        seen: set[str] = set()
        for proc in processes:
            if proc.name in seen:
                raise ValueError(f"process name {proc.name!r} is used twice; names must be unique")
            seen.add(proc.name)
        return processes
