from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers.sidecar import ROOT, Starter, StartSidecar

# The exchange simulator and the demo engine live in examples/, the docs generators
# in scripts/ (neither is a package), the dashboards' code in dashboards/.
sys.path.insert(0, str(ROOT / "examples"))
sys.path.insert(0, str(ROOT / "scripts"))
sys.path.insert(0, str(ROOT / "dashboards"))


@pytest.fixture
def start_sidecar(tmp_path: Path) -> Iterator[StartSidecar]:
    """Start real sidecar processes; every one is stopped at teardown."""
    counter = iter(range(1000))

    def make_dir() -> Path:
        directory = tmp_path / f"sidecar{next(counter)}"
        directory.mkdir()
        return directory

    starter = Starter(make_dir)
    yield starter
    starter.stop_all()


@pytest.fixture(scope="module")
def start_module_sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StartSidecar]:
    """As start_sidecar, shared by a module's tests (each uses its own service.name)."""
    starter = Starter(lambda: tmp_path_factory.mktemp("sidecar"))
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
