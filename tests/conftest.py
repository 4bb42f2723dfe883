from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from contract import PROMTOOL_ALLOWED
from sidecar_process import ROOT, SidecarProcess

# The exchange simulator and the demo engine live in examples/, the docs generators
# in scripts/ (neither is a package).
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "scripts"))


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


StartSidecar = Callable[..., SidecarProcess]


class _Starter:
    """Starts real sidecar processes in fresh directories; stops them all at the end."""

    def __init__(self, make_dir: Callable[[], Path]) -> None:
        self.make_dir = make_dir
        self.started: list[SidecarProcess] = []

    def __call__(
        self, overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> SidecarProcess:
        config = SidecarProcess.write_config(self.make_dir(), overrides)
        sidecar = SidecarProcess(config, env or {})
        self.started.append(sidecar)
        return sidecar.start()

    def stop_all(self) -> None:
        for sidecar in self.started:
            sidecar.stop()


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[StartSidecar]:
    """Start real sidecar processes; every one is stopped at teardown."""
    counter = iter(range(1000))

    def make_dir() -> Path:
        directory = tmp_path / f"sidecar{next(counter)}"
        directory.mkdir()
        return directory

    starter = _Starter(make_dir)
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def start_module_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartSidecar]:
    """As start_sidecar, shared by a module's tests (each uses its own service.name)."""
    starter = _Starter(lambda: tmp_path_factory.mktemp("sidecar"))
    yield starter
    starter.stop_all()


@pytest.fixture(scope="session")
def simulator() -> Iterator[Any]:
    """The Binance REST simulator on 127.0.0.1, in a background thread."""
    from exchange_simulator import BinanceSimulator

    sim = BinanceSimulator(seed=7)
    sim.start_in_thread()
    yield sim
    sim.stop_in_thread()
