"""A watched engine process that starts, dies and comes back, seen through the real sidecar."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from helpers.sidecar import SidecarProcess, StartSidecar, sample_value

# A stand-in engine with a known number of threads: the main one and THREADS - 1
# sleepers. It says "ready" once they all run.
THREADS = 3
ENGINE_CODE = f"""
import threading, time
for _ in range({THREADS - 1}):
    threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
print("ready", flush=True)
time.sleep(600)
"""


class Engine:
    """Starts and kills stand-in engine processes carrying a unique marker."""

    def __init__(self) -> None:
        self.marker = f"tickscope-engine-{time.monotonic_ns()}"
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-c", ENGINE_CODE, self.marker],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
        )
        self.procs.append(proc)
        assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
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


def collected_since(s: SidecarProcess, since: float) -> dict[str, float] | None:
    """The engine series, once the sidecar serves a collection that began after `since`."""
    families = s.families()
    done = sample_value(
        families["tickscope_collect_last_success_timestamp_seconds"], collector="engine_process"
    )
    took = sample_value(families["tickscope_collect_duration_seconds"], collector="engine_process")
    return engine_series(s) if done - took > since else None


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
    ready_at = time.time()
    # A collection from after "ready" sees every thread.
    series = s.wait_until(lambda: collected_since(s, ready_at), timeout=5, what="engine seen")
    assert s.get("/readyz").status == 200
    assert series["engine_process_up"] == 1
    assert series["engine_process_restarts_total"] == 0  # the first sighting is not a restart
    assert series["engine_process_start_time_seconds"] == pytest.approx(
        psutil.Process(first.pid).create_time()
    )
    assert series["engine_process_threads"] == THREADS
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
        psutil.Process(second.pid).create_time()
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


def errors(s: SidecarProcess) -> float:
    return sample_value(s.families()["tickscope_collect_errors"], collector="engine_process")


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
    # Neither a missing pid file nor a missing process is an error.
    assert errors(s) == 0

    pid_file.write_text("not a pid\n")
    s.wait_until(lambda: up(s) == 0, timeout=5, what="garbage pid file means down")
    s.wait_for_log(
        f"engine process 'engine': pid file {pid_file} does not hold a PID: 'not a pid'",
        collector="engine_process",
    )
    # One error per collection while the file is bad (tests/test_engine_fixtures.py
    # counts them exactly); how many collections ran depends on the clock.
    assert errors(s) > 0
    assert s.get("/healthz").status == 200  # a bad pid file never takes the sidecar down

    pid_file.write_text(f"{proc.pid}\n")
    s.wait_until(lambda: up(s) == 1, timeout=5, what="engine up again")
    # The same process seen again is not a restart.
    assert engine_series(s)["engine_process_restarts_total"] == 0

    pid_file.unlink()
    s.wait_until(lambda: up(s) == 0, timeout=5, what="missing pid file means down")


def test_a_pid_file_turned_fifo_is_down_with_the_reason_and_not_ready(
    start_sidecar: StartSidecar, engine: Engine, tmp_path: Path
) -> None:
    # Issue 11, defect 11: a blocking open() of a FIFO hung the collection past the
    # collect timeout, so the stale snapshot was dropped (every engine series gone)
    # while readiness, never re-evaluated, stayed 200.
    pid_file = tmp_path / "engine.pid"
    proc = engine.start()
    pid_file.write_text(f"{proc.pid}\n")
    s = start_sidecar(
        {
            "engine": {
                "interval": "0.5s",
                "processes": [{"name": "engine", "pid_file": str(pid_file)}],
            },
            "limits": {"collect_timeout": "1s"},
        }
    )
    s.wait_until(lambda: s.get("/readyz").status == 200, what="ready with the engine up")
    assert (up(s), errors(s)) == (1, 0)

    pid_file.unlink()
    os.mkfifo(pid_file)
    reason = (
        f"engine process 'engine' (pid file {pid_file}) not running: "
        f"pid file {pid_file} is a FIFO, not a regular file"
    )
    s.wait_until(lambda: s.get("/readyz").status == 503, timeout=5, what="not ready")
    checks = {c["name"]: c for c in s.get("/readyz").json()["checks"]}
    assert checks["engine:engine"] == {"name": "engine:engine", "ready": False, "reason": reason}
    # Still served, reported down (a scrape may be served from the exposition cache,
    # server.metrics_cache_ttl, so wait for it), and the refusal counted.
    s.wait_until(lambda: up(s) == 0, timeout=5, what="reported down")
    s.wait_for_log(
        f"engine process 'engine': pid file {pid_file} is a FIFO, not a regular file",
        collector="engine_process",
    )
    assert errors(s) > 0
    assert s.get("/healthz").status == 200
    # The status page says why it is down.
    (status,) = s.get("/?format=json").json()["engine_processes"]
    assert (status["up"], status["reason"]) == (
        False,
        f"pid file {pid_file} is a FIFO, not a regular file",
    )
    assert f"DOWN ({status['reason']})" in s.get("/").text

    pid_file.unlink()
    pid_file.write_text(f"{proc.pid}\n")
    s.wait_until(lambda: s.get("/readyz").status == 200, timeout=5, what="ready again")
    s.wait_until(lambda: up(s) == 1, timeout=5, what="reported up again")
