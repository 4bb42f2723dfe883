"""System binaries the tests need (Debian packages that `make test` installs)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest

from helpers.contract import PROMTOOL_ALLOWED


def require_binary(name: str) -> str:
    """Path of a system binary the test needs. Missing in CI is a failure (make
    test installs it), missing on a developer's machine a skip that says why."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (make test installs it with apt-get)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def promtool_check_metrics(exposition: str) -> tuple[list[str], int]:
    """`promtool check metrics` on an exposition: the findings other than the one
    the contract accepts (node_exporter's CamelCase meminfo names), and the exit code."""
    result = subprocess.run(
        [require_binary("promtool"), "check", "metrics"],
        input=exposition,
        capture_output=True,
        text=True,
        timeout=60,
    )
    findings = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return [line for line in findings if not re.match(PROMTOOL_ALLOWED, line)], result.returncode
