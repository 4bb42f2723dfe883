"""Hostile configuration (issue 11, defect 17): every input gets one line per problem
and exit 2 from check-config, never a traceback, a hang or an exhausted memory, and
nothing check-config accepts breaks `run` later.

In-process cases call load_config; the command-line ones run `tickscope check-config`
as a subprocess (run_cli's timeout turns a hang into a failure).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from helpers.sidecar import run_cli
from tickscope.agent.config import (
    DEFAULT_MAX_CONFIG_BYTES,
    DEFAULT_MAX_CONFIG_DEPTH,
    ConfigError,
    load_config,
)
from tickscope.core.configtypes import MAX_BYTES, MAX_DURATION_SECONDS


def problems(path: str | None, environ: dict[str, str] | None = None, **bounds: int) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(path, environ or {}, **bounds)
    return info.value.problems


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return str(path)


def check_config(path: str | None, env: dict[str, str] | None = None) -> list[str]:
    """check-config's stderr lines, after asserting exit 2, no stdout, no traceback."""
    args = ["check-config"] + ([path] if path else [])
    r = run_cli(*args, env=env, timeout=20)
    assert (r.returncode, r.stdout) == (2, ""), r.stderr
    assert "Traceback" not in r.stderr
    return r.stderr.splitlines()


def test_the_documented_defaults() -> None:
    assert (DEFAULT_MAX_CONFIG_BYTES, DEFAULT_MAX_CONFIG_DEPTH) == (1 << 20, 32)
    assert (MAX_BYTES, MAX_DURATION_SECONDS) == (2**63 - 1, 31_536_000.0)


# --- the file itself ------------------------------------------------------------------


def test_yaml_nested_thousands_deep(tmp_path: Path) -> None:
    path = write(tmp_path, "server: " + "[" * 5000 + "]" * 5000 + "\n")
    assert check_config(path) == [
        f"tickscope: invalid configuration in {path} (1 problem):",
        f"  {path}: not valid YAML at line 1, column 40: nested deeper than 32 levels",
    ]


def test_yaml_block_mappings_nested_past_the_bound(tmp_path: Path) -> None:
    path = write(tmp_path, "".join("  " * i + f"k{i}:\n" for i in range(40)))
    assert problems(path) == [
        f"{path}: not valid YAML at line 33, column 65: nested deeper than 32 levels"
    ]


def test_the_depth_bound_is_a_flag(tmp_path: Path) -> None:
    path = write(tmp_path, "engine:\n  processes:\n    - name: e\n      process_name: x\n")
    assert load_config(path, {}, max_depth=4).engine.processes[0].name == "e"
    assert problems(path, max_depth=3) == [
        f"{path}: not valid YAML at line 3, column 7: nested deeper than 3 levels"
    ]
    r = run_cli("check-config", "--config-max-depth", "3", path, timeout=20)
    assert (r.returncode, r.stderr.splitlines()[1:]) == (
        2,
        [f"  {path}: not valid YAML at line 3, column 7: nested deeper than 3 levels"],
    )


def test_aliases_nesting_past_the_bound(tmp_path: Path) -> None:
    # Each node is composed shallow; the aliases make the value 34 lists deep.
    lines = ["a0: &a0 [1]"] + [f"a{i}: &a{i} [*a{i - 1}]" for i in range(1, 34)]
    path = write(tmp_path, "\n".join(lines) + "\n")
    assert problems(path) == [f"{path}: nested deeper than 32 levels"]


def test_an_unhashable_key(tmp_path: Path) -> None:
    path = write(tmp_path, "? [a, b]\n: 1\n")
    assert check_config(path) == [
        f"tickscope: invalid configuration in {path} (1 problem):",
        f"  {path}: not valid YAML at line 1, column 3: a list cannot be a key; keys are "
        "names such as port",
    ]


def test_a_5000_digit_integer_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "server:\n  port: " + "1" * 5000 + "\n")
    assert check_config(path) == [
        f"tickscope: invalid configuration in {path} (1 problem):",
        f"  {path}: not valid YAML at line 2, column 9: integer of 5000 characters is too "
        "long (at most 4300 digits)",
    ]


def test_dev_zero_is_refused_without_reading_it() -> None:
    assert check_config("/dev/zero") == [
        "tickscope: invalid configuration in /dev/zero (1 problem):",
        "  /dev/zero: is a device, not a regular file",
    ]


def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "c.yaml"
    os.mkfifo(fifo)
    assert check_config(str(fifo)) == [
        f"tickscope: invalid configuration in {fifo} (1 problem):",
        f"  {fifo}: is a FIFO, not a regular file",
    ]


def test_a_file_past_the_size_bound(tmp_path: Path) -> None:
    path = write(tmp_path, ("# padding\n" * 110_000))  # 1,100,000 bytes of comments
    assert problems(path) == [
        f"{path}: larger than 1048576 bytes (the limit; see --config-max-bytes)"
    ]
    assert load_config(path, {}, max_bytes=2_000_000) is not None
    r = run_cli("check-config", "--config-max-bytes", "100", path, timeout=20)
    assert (r.returncode, r.stderr.splitlines()[1:]) == (
        2,
        [f"  {path}: larger than 100 bytes (the limit; see --config-max-bytes)"],
    )


# --- env JSON ---------------------------------------------------------------------------


def test_env_json_nested_30000_deep() -> None:
    env = {"TICKSCOPE_ENGINE__PROCESSES": "[" * 30000 + "]" * 30000}
    assert check_config(None, env) == [
        "tickscope: invalid configuration (1 problem):",
        "  TICKSCOPE_ENGINE__PROCESSES: JSON nested deeper than 32 levels in all",
    ]


def test_env_json_depth_counts_the_variables_path() -> None:
    # engine.processes's value sits below two mappings (the top level, engine): 30
    # brackets still fit in 32 levels, 31 do not.
    ok = "[" * 30 + "]" * 30
    assert problems(None, {"TICKSCOPE_ENGINE__PROCESSES": ok})[0].startswith(
        "engine.processes[0]: "
    )
    deep = "[" * 31 + "]" * 31
    assert problems(None, {"TICKSCOPE_ENGINE__PROCESSES": deep}) == [
        "TICKSCOPE_ENGINE__PROCESSES: JSON nested deeper than 32 levels in all"
    ]


def test_env_json_brackets_inside_strings_are_not_nesting() -> None:
    # 100 "[" inside a string (and an escaped quote before them) are text, not levels.
    text = '\\"' + "\\\\[" * 100  # JSON for the string "\[\[...: an escaped quote, \[ x 100
    value = '[{"name": "e", "cmdline": "' + text + '"}]'
    [proc] = load_config(None, {"TICKSCOPE_ENGINE__PROCESSES": value}).engine.processes
    assert proc.cmdline is not None and proc.cmdline.pattern == '"' + "\\[" * 100


def test_env_json_with_a_5000_digit_integer() -> None:
    env = {"TICKSCOPE_ENGINE__PROCESSES": "[" + "1" * 5000 + "]"}
    assert check_config(None, env) == [
        "tickscope: invalid configuration (1 problem):",
        "  TICKSCOPE_ENGINE__PROCESSES: not valid JSON: an integer longer than 4300 digits",
    ]


# --- values that passed check-config and broke run ----------------------------------------


@pytest.mark.parametrize(
    ("yaml_text", "line"),
    [
        ("forward:\n  timeout: .inf\n", "forward.timeout: expected a finite duration, got inf"),
        ("forward:\n  timeout: inf\n", "forward.timeout: expected a finite duration, got 'inf'"),
        (
            "engine:\n  interval: 1.0e+309\n",
            "engine.interval: expected a finite duration, got inf",
        ),
        (
            "engine:\n  interval: '1e309'\n",
            "engine.interval: expected a finite duration, got '1e309'",
        ),
        ("engine:\n  interval: .nan\n", "engine.interval: expected a finite duration, got nan"),
        (
            "server:\n  liveness_max_loop_lag: .inf\n",
            "server.liveness_max_loop_lag: expected a finite duration, got inf",
        ),
        (
            "server:\n  shutdown_timeout: 400d\n",
            "server.shutdown_timeout: Input should be less than or equal to 31536000",
        ),
        (
            "forward:\n  max_batch_bytes: 9223372036854775808\n",
            "forward.max_batch_bytes: Input should be less than or equal to 9223372036854775807",
        ),
        (
            "forward:\n  max_batch_bytes: 16EiB\n",
            "forward.max_batch_bytes: Input should be less than or equal to 9223372036854775807",
        ),
        (
            "forward:\n  max_batch_bytes: .inf\n",
            "forward.max_batch_bytes: expected a finite size in bytes, got inf",
        ),
        (
            "forward:\n  max_batch_bytes: true\n",
            "forward.max_batch_bytes: expected a size in bytes, got True",
        ),
        ("engine:\n  interval: true\n", "engine.interval: expected a duration, got True"),
        ("server:\n  port: true\n", "server.port: expected a port number, got True"),
        (
            "receiver:\n  http:\n    enabled: 1\n",
            "receiver.http.enabled: expected true or false, got 1",
        ),
        (
            "engine:\n  processes:\n    - name: e\n      process_name: x\n      required: 0\n",
            "engine.processes[0].required: expected true or false, got 0",
        ),
        (
            "receiver:\n  http:\n    enabled: 'yes'\n",
            "receiver.http.enabled: expected true or false, got 'yes'",
        ),
    ],
)
def test_values_that_would_break_run(tmp_path: Path, yaml_text: str, line: str) -> None:
    assert problems(write(tmp_path, yaml_text)) == [line]


def test_check_config_refuses_an_infinite_timeout_with_exit_2(tmp_path: Path) -> None:
    path = write(tmp_path, "forward:\n  timeout: .inf\n")
    assert check_config(path) == [
        f"tickscope: invalid configuration in {path} (1 problem):",
        "  forward.timeout: expected a finite duration, got inf",
    ]


def test_booleans_from_env_are_true_or_false() -> None:
    assert (
        load_config(None, {"TICKSCOPE_RECEIVER__HTTP__ENABLED": "False"}).receiver.http.enabled
        is False
    )
    assert (
        load_config(None, {"TICKSCOPE_RECEIVER__HTTP__ENABLED": " TRUE "}).receiver.http.enabled
        is True
    )
    assert problems(None, {"TICKSCOPE_RECEIVER__HTTP__ENABLED": "1"}) == [
        "receiver.http.enabled: expected true or false, got '1' (from "
        "TICKSCOPE_RECEIVER__HTTP__ENABLED)"
    ]
