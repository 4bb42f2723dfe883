from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sidecar_process import ROOT, SidecarProcess

# The exchange simulator and the demo engine live in examples/ (not a package).
sys.path.insert(0, str(ROOT / "examples"))


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


StartSidecar = Callable[..., SidecarProcess]


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[StartSidecar]:
    """Start real sidecar processes; every one is stopped at teardown."""
    started: list[SidecarProcess] = []

    def start(
        overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> SidecarProcess:
        directory = tmp_path / f"sidecar{len(started)}"
        directory.mkdir()
        config = SidecarProcess.write_config(directory, overrides)
        sidecar = SidecarProcess(config, env or {})
        started.append(sidecar)
        return sidecar.start()

    yield start
    for sidecar in started:
        sidecar.stop()


@pytest.fixture(scope="module")
def start_module_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartSidecar]:
    """As start_sidecar, shared by a module's tests (each uses its own service.name)."""
    started: list[SidecarProcess] = []

    def start(
        overrides: dict[str, Any] | None = None, env: dict[str, str] | None = None
    ) -> SidecarProcess:
        directory = tmp_path_factory.mktemp("sidecar")
        config = SidecarProcess.write_config(directory, overrides)
        sidecar = SidecarProcess(config, env or {})
        started.append(sidecar)
        return sidecar.start()

    yield start
    for sidecar in started:
        sidecar.stop()


@pytest.fixture(scope="session")
def simulator() -> Iterator[Any]:
    """The Binance REST simulator on 127.0.0.1, in a background thread."""
    from exchange_simulator import BinanceSimulator

    sim = BinanceSimulator(seed=7)
    sim.start_in_thread()
    yield sim
    sim.stop_in_thread()
