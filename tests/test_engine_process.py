"""A watched engine process that starts, dies and comes back, seen through the real sidecar."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers.sidecar import SidecarProcess, StartSidecar, sample_value


class Engine:
    """Starts and kills stand-in engine processes carrying a unique marker."""

    def __init__(self) -> None:
        self.marker = f"tickscope-engine-{time.monotonic_ns()}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(600)", self.marker],
            stdin=subprocess.DEVNULL,
        )
        self.procs.append(proc)
        return proc

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        proc.kill()
        proc.wait(5)

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                self.kill(proc)


@pytest.fixture
def engine() -> Iterator[Engine]:
    e = Engine()
    yield e
    e.cleanup()


def engine_series(s: SidecarProcess) -> dict[str, float]:
    out = {}
    for family in s.families().values():
        for sample in family.samples:
            if sample.name.startswith("engine_") and sample.labels.get("process") == "engine":
                key = sample.name + (
                    f"[{sample.labels['mode']}]" if "mode" in sample.labels else ""
                )
                out[key] = sample.value
    return out


def up(s: SidecarProcess) -> float:
    return sample_value(s.families()["engine_process_up"], process="engine")


def test_process_lifecycle(start_sidecar: StartSidecar, engine: Engine) -> None:
    s = start_sidecar(
        {
            "engine": {
                "interval": "0.5s",
                "processes": [{"name": "engine", "cmdline": engine.marker}],
            }
        }
    )
    # Not started yet: up 0, not ready, and the reason says which process and how it is matched.
    s.wait_until(lambda: "engine_process_up" in s.families(), what="first engine collection")
    assert up(s) == 0
    ready = s.get("/readyz")
    assert ready.status == 503
    reasons = {c["name"]: c.get("reason") for c in ready.json()["checks"]}
    assert reasons["engine:engine"] == (
        f"engine process 'engine' (command line matching '{engine.marker}') not running"
    )

    first = engine.start()
    s.wait_until(lambda: up(s) == 1, timeout=5, what="engine up")
    assert s.get("/readyz").status == 200
    series = engine_series(s)
    assert series["engine_process_restarts_total"] == 0  # the first sighting is not a restart
    assert series["engine_process_start_time_seconds"] == pytest.approx(
        __import__("psutil").Process(first.pid).create_time()
    )
    assert series["engine_process_threads"] >= 1
    assert series["engine_process_resident_memory_bytes"] > 1_000_000

    engine.kill(first)
    s.wait_until(lambda: up(s) == 0, timeout=5, what="engine down")
    # Nothing of the dead process is served: only up and the restart counter remain.
    assert set(engine_series(s)) == {"engine_process_up", "engine_process_restarts_total"}
    assert s.get("/readyz").status == 503

    second = engine.start()
    assert second.pid != first.pid
    s.wait_until(lambda: up(s) == 1, timeout=5, what="engine back")
    assert engine_series(s)["engine_process_restarts_total"] == 1
    assert engine_series(s)["engine_process_start_time_seconds"] == pytest.approx(
        __import__("psutil").Process(second.pid).create_time()
    )
    assert s.get("/readyz").status == 200
    s.wait_for_log("engine process restarted", pid=second.pid, old_pid=first.pid)

    # Replaced within one interval, never seen down: still a restart.
    engine.kill(second)
    third = engine.start()
    s.wait_until(
        lambda: engine_series(s).get("engine_process_restarts_total") == 2,
        timeout=5,
        what="fast restart counted",
    )
    assert third.poll() is None


def test_pid_file_and_optional_process(
    start_sidecar: StartSidecar, engine: Engine, tmp_path: Path
) -> None:
    pid_file = tmp_path / "engine.pid"
    s = start_sidecar(
        {
            "engine": {
                "interval": "0.5s",
                "processes": [{"name": "engine", "pid_file": str(pid_file), "required": False}],
            }
        }
    )
    s.wait_until(lambda: "engine_process_up" in s.families(), what="first engine collection")
    assert up(s) == 0
    # An optional process does not hold readiness back.
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready without the optional engine")

    proc = engine.start()
    pid_file.write_text(f"{proc.pid}\n")
    s.wait_until(lambda: up(s) == 1, timeout=5, what="engine up via pid file")

    pid_file.write_text("not a pid\n")
    s.wait_until(lambda: up(s) == 0, timeout=5, what="garbage pid file means down")
    errors = sample_value(s.families()["tickscope_collect_errors"], collector="engine_process")
    assert errors >= 1
    assert s.get("/healthz").status == 200  # a bad pid file never takes the sidecar down

    pid_file.write_text(f"{proc.pid}\n")
    s.wait_until(lambda: up(s) == 1, timeout=5, what="engine up again")
    # The same process seen again is not a restart.
    assert engine_series(s)["engine_process_restarts_total"] == 0

    pid_file.unlink()
    s.wait_until(lambda: up(s) == 0, timeout=5, what="missing pid file means down")
