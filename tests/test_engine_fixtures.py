"""The engine-process collector against a fixture /proc, with exact expected values.

client_python tests its process collector by pointing it at a fixture proc
directory; this does the same through engine.procfs. The collector reads the
process through psutil, which takes its root from psutil.PROCFS_PATH (set under a
lock for each collection, see collectors/procfs_root.py), and reads swap and the
fd limit itself. tests/fixtures/proc holds:

  4194400  the engine: python3 -m demo_engine, the oldest live match
  4194401  its worker, same command line, started later
  4194402  a zombie python3 left by an earlier engine, older than both
  4194403  a kernel thread (no command line, no VmSwap)

The PIDs lie above the kernel's PID_MAX_LIMIT (2^22), so none can be the test's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
from pydantic import ValidationError

from tickscope.collectors.base import CollectResult
from tickscope.collectors.engine import EngineConfig, EngineProcessCollector

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="psutil honours PROCFS_PATH on Linux only"
)

PROC = str(Path(__file__).parent / "fixtures" / "proc")
# statm counts pages of the machine's page size; /proc/stat's times are in USER_HZ (100).
PAGE = os.sysconf("SC_PAGE_SIZE")
BTIME = 1700000000.0

ENGINE = {
    "engine_process_up": 1.0,
    "engine_process_cpu_seconds_total{user}": 12.34,  # utime 1234 ticks
    "engine_process_cpu_seconds_total{system}": 5.67,  # stime 567 ticks
    "engine_process_resident_memory_bytes": 7325.0 * PAGE,
    "engine_process_virtual_memory_bytes": 198326.0 * PAGE,
    "engine_process_swap_bytes": 1536.0 * 1024,  # VmSwap
    "engine_process_open_fds": 7.0,  # fd/0 .. fd/6
    "engine_process_max_fds": 65536.0,  # the soft limit, not the hard one
    "engine_process_threads": 5.0,
    "engine_process_start_time_seconds": BTIME + 987654 / 100,  # btime + starttime
    "engine_process_read_bytes_total": 4096000.0,  # io read_bytes, not rchar
    "engine_process_written_bytes_total": 123456789.0,
    "engine_process_restarts_total": 0.0,
}

WORKER = {
    "engine_process_up": 1.0,
    "engine_process_cpu_seconds_total{user}": 0.5,
    "engine_process_cpu_seconds_total{system}": 0.2,
    "engine_process_resident_memory_bytes": 3000.0 * PAGE,
    "engine_process_virtual_memory_bytes": 97656.0 * PAGE,
    "engine_process_swap_bytes": 0.0,
    "engine_process_open_fds": 3.0,
    "engine_process_max_fds": float("inf"),  # "unlimited"
    "engine_process_threads": 1.0,
    "engine_process_start_time_seconds": BTIME + 990000 / 100,
    "engine_process_read_bytes_total": 0.0,
    "engine_process_written_bytes_total": 0.0,
    "engine_process_restarts_total": 0.0,
}

DOWN = {"engine_process_up": 0.0, "engine_process_restarts_total": 0.0}


def series(result: CollectResult, process: str = "engine") -> dict[str, float]:
    out: dict[str, float] = {}
    for family in result.families:
        for s in family.samples:
            if s.labels.get("process") == process:
                mode = f"{{{s.labels['mode']}}}" if "mode" in s.labels else ""
                out[s.name + mode] = s.value
    return out


def collector(
    procfs: str, environ: dict[str, str] | None = None, **match: Any
) -> EngineProcessCollector:
    config = EngineConfig.model_validate(
        {"procfs": procfs, "processes": [{"name": "engine", **match}]}
    )
    return EngineProcessCollector(config, environ or {})


def test_the_engine_found_by_command_line() -> None:
    result = collector(PROC, cmdline=r"-m demo_engine\b").collect()
    assert result.errors == []
    assert series(result) == ENGINE
    # The global psutil reads is back where it was.
    assert psutil.PROCFS_PATH == "/proc"


def test_the_engine_found_by_name_skips_the_older_zombie() -> None:
    c = collector(PROC, process_name="python3")
    result = c.collect()
    assert result.errors == []
    assert series(result) == ENGINE
    assert c.status() == {
        "processes": [
            {
                "name": "engine",
                "up": True,
                "pid": 4194400,
                "restarts": 0,
                "required": True,
                "match": "process name 'python3'",
                "reason": None,
            }
        ]
    }
    assert c.readiness() == {"engine:engine": None}


def test_a_pid_file_names_the_process(tmp_path: Path) -> None:
    pid_file = tmp_path / "engine.pid"
    pid_file.write_text("4194401\n")
    assert series(collector(PROC, pid_file=str(pid_file)).collect()) == WORKER


def test_a_pid_file_naming_a_zombie_means_down(tmp_path: Path) -> None:
    pid_file = tmp_path / "engine.pid"
    pid_file.write_text("4194402\n")
    c = collector(PROC, pid_file=str(pid_file))
    result = c.collect()
    assert (result.errors, series(result)) == ([], DOWN)
    assert c.readiness() == {
        "engine:engine": f"engine process 'engine' (pid file {pid_file}) not running"
    }


def test_a_bad_pid_file_is_an_error_each_collection(tmp_path: Path) -> None:
    pid_file = tmp_path / "engine.pid"
    pid_file.write_text("not a pid\n")
    c = collector(PROC, pid_file=str(pid_file))
    message = f"engine process 'engine': pid file {pid_file} does not hold a PID: 'not a pid'"
    for _ in range(2):
        result = c.collect()
        assert (result.errors, series(result)) == ([message], DOWN)


def test_container_limits_from_the_environment() -> None:
    config = EngineConfig.model_validate(
        {
            "procfs": PROC,
            "processes": [{"name": "engine", "process_name": "python3", "cpu_limit_divisor": "1m"}],
        }
    )
    env = {"ENGINE_MEMORY_LIMIT": "1Gi", "ENGINE_CPU_LIMIT": "1500"}
    got = series(EngineProcessCollector(config, env).collect())
    assert got == {
        **ENGINE,
        "engine_container_memory_limit_bytes": 2.0**30,
        "engine_container_cpu_limit_cores": 1.5,
    }


def test_a_reused_pid_is_a_restart_and_an_exit_leaves_only_up(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    shutil.copytree(PROC, proc)
    c = collector(str(proc), cmdline="demo_engine")
    assert series(c.collect()) == ENGINE
    shutil.rmtree(proc / "4194401")  # the worker exits: the engine is unchanged
    assert series(c.collect()) == ENGINE

    # The engine died and a new one got the same PID: another start time, so a restart.
    stat = proc / "4194400" / "stat"
    stat.write_text(stat.read_text().replace(" 987654 ", " 1000000 "))
    restarted = {
        **ENGINE,
        "engine_process_start_time_seconds": BTIME + 1000000 / 100,
        "engine_process_restarts_total": 1.0,
    }
    assert series(c.collect()) == restarted
    assert series(c.collect()) == restarted  # seen again unchanged: not a restart

    # It exits: only up and the restart count are left, nothing of the dead process.
    shutil.rmtree(proc / "4194400")
    assert series(c.collect()) == {"engine_process_up": 0.0, "engine_process_restarts_total": 1.0}
    assert c.status()["processes"][0]["pid"] is None


def test_when_the_engine_exits_its_worker_is_the_oldest_match(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    shutil.copytree(PROC, proc)
    c = collector(str(proc), cmdline="demo_engine")
    assert series(c.collect()) == ENGINE
    shutil.rmtree(proc / "4194400")
    assert series(c.collect()) == {**WORKER, "engine_process_restarts_total": 1.0}
    assert c.status()["processes"][0]["pid"] == 4194401


def test_collectors_of_two_roots_run_side_by_side(tmp_path: Path) -> None:
    # The sidecar itself, through the real /proc and a pid file; its start time is
    # read before the threads start, while psutil.PROCFS_PATH is the real one.
    expected_start = psutil.Process().create_time()

    pid_file = tmp_path / "me.pid"
    pid_file.write_text(f"{os.getpid()}\n")

    failures: list[str] = []

    def run(c: EngineProcessCollector, check: Any) -> None:
        for _ in range(150):
            try:
                check(series(c.collect()))
            except AssertionError as exc:  # pragma: no cover - reported below
                failures.append(str(exc))
                return

    def check_fixture(got: dict[str, float]) -> None:
        assert got == ENGINE, got

    def check_real(got: dict[str, float]) -> None:
        assert got["engine_process_up"] == 1.0, got
        assert got["engine_process_start_time_seconds"] == expected_start, got

    workers = [
        threading.Thread(target=run, args=(collector(PROC, cmdline="demo_engine"), check_fixture)),
        threading.Thread(target=run, args=(collector("/proc", pid_file=str(pid_file)), check_real)),
    ]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    assert failures == []
    assert psutil.PROCFS_PATH == "/proc"


@pytest.mark.parametrize("procfs", ["proc", "host/proc"])
def test_a_relative_procfs_is_refused(procfs: str) -> None:
    with pytest.raises(ValidationError, match=f"must be an absolute path, got '{procfs}'"):
        EngineConfig(procfs=procfs)


def test_procfs_defaults_to_proc_and_is_normalised() -> None:
    assert EngineConfig().procfs == "/proc"
    assert EngineConfig(procfs="/host/proc/").procfs == "/host/proc"


# Issue 11, defect 10: a backtracking cmdline regex against a command line any local
# user writes. Under `re`, (a+)+$ against 'a'*40 + '!' backtracks ~2^40 times while
# holding the GIL (13-15 s per collection was measured with a shorter string); the
# collection runs in a child process so that a regression fails on the timeout
# instead of hanging the suite.
_HOSTILE_COLLECTION = """
import json, sys, time
from tickscope.collectors.engine import EngineConfig, EngineProcessCollector
config = EngineConfig.model_validate(
    {"procfs": sys.argv[1], "processes": [{"name": "engine", "cmdline": "(a+)+$"}]}
)
c = EngineProcessCollector(config, {})
start = time.perf_counter()
result = c.collect()
elapsed = time.perf_counter() - start
up = [s.value for f in result.families for s in f.samples if s.name == "engine_process_up"]
print(json.dumps({"elapsed": elapsed, "up": up, "errors": list(result.errors),
                  "pid": c.status()["processes"][0]["pid"]}))
"""


def _fixture_copy(tmp_path: Path) -> Path:
    root = tmp_path / "proc"
    shutil.copytree(PROC, root, symlinks=True)
    return root


def _write_cmdline(root: Path, pid: int, argv: list[bytes], like: int = 4194401) -> None:
    if not (root / str(pid)).exists():
        shutil.copytree(root / str(like), root / str(pid), symlinks=True)
    (root / str(pid) / "cmdline").write_bytes(b"".join(a + b"\0" for a in argv))


def test_a_backtracking_cmdline_regex_does_not_stall_the_collection(tmp_path: Path) -> None:
    root = _fixture_copy(tmp_path)
    # The hostile process: never matches (it ends in '!'), and makes `re` backtrack.
    _write_cmdline(root, 4194404, [b"a" * 40 + b"!"])
    # The worker's command line is the one that matches (a+)+$.
    _write_cmdline(root, 4194401, [b"aaaa"])
    r = subprocess.run(
        [sys.executable, "-c", _HOSTILE_COLLECTION, str(root)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["up"], out["errors"], out["pid"]) == ([1.0], [], 4194401)
    # The figure, not a bound: timing belongs in a benchmark (bench/), not an assertion.
    print(f"collection with (a+)+$ against 'a'*40+'!': {out['elapsed'] * 1000:.1f} ms")


def test_a_command_line_that_is_not_utf8_is_matched_by_its_bytes(tmp_path: Path) -> None:
    root = _fixture_copy(tmp_path)
    # psutil decodes invalid UTF-8 with surrogateescape; RE2 cannot encode surrogates.
    _write_cmdline(root, 4194401, [b"bot\xff.py", b"--live"])
    c = collector(str(root), cmdline=r"^bot.*--live$")
    result = c.collect()
    assert (result.errors, c.status()["processes"][0]["pid"]) == ([], 4194401)


@pytest.mark.parametrize(
    ("pattern", "detail"),
    [
        (r"(bot)\1", r"invalid escape sequence: \1"),
        (r"bot(?=\.py)", "invalid perl operator: (?="),
        (r"(?<!test_)bot", "invalid perl operator: (?<!"),
        (r"bot\Z", r"invalid escape sequence: \Z"),
    ],
)
def test_a_cmdline_regex_re2_cannot_run_is_refused_at_load(pattern: str, detail: str) -> None:
    with pytest.raises(ValidationError) as info:
        collector(PROC, cmdline=pattern)
    [error] = info.value.errors(include_url=False)
    assert error["loc"] == ("processes", 0, "cmdline")
    assert error["msg"] == (
        f"Value error, invalid regular expression {pattern!r}: {detail} (regexes are RE2 "
        "syntax, matched in linear time: no backreferences, lookahead or lookbehind; "
        r"write \z for Python's \Z)"
    )


# Issue 11, defect 11: a pid file that is a FIFO. open() without O_NONBLOCK waits for
# a writer forever; each check runs in a thread so that a regression fails on the
# join timeout instead of hanging the suite (the thread is then released by opening
# the FIFO for writing).
def _in_thread(fn: Any, fifo: Path) -> Any:
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # handed to the test below
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5.0)
    if t.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # release the blocked open
        t.join(5.0)
        pytest.fail("reading the pid file blocked on the FIFO")
    if "error" in box:
        raise box["error"]
    return box.get("value")


def test_a_fifo_pid_file_is_refused_at_startup_without_blocking(tmp_path: Path) -> None:
    from tickscope.collectors.engine.finder import PidFileError, check_pid_file

    fifo = tmp_path / "engine.pid"
    os.mkfifo(fifo)
    with pytest.raises(PidFileError) as info:
        _in_thread(lambda: check_pid_file(str(fifo)), fifo)
    assert str(info.value) == f"pid file {fifo} is a FIFO, not a regular file"


def test_a_fifo_pid_file_is_an_error_each_collection_and_not_ready(tmp_path: Path) -> None:
    fifo = tmp_path / "engine.pid"
    os.mkfifo(fifo)
    c = collector(PROC, pid_file=str(fifo))
    message = f"engine process 'engine': pid file {fifo} is a FIFO, not a regular file"
    for _ in range(2):
        result = _in_thread(c.collect, fifo)
        assert (result.errors, series(result)) == ([message], DOWN)
        assert c.readiness() == {
            "engine:engine": f"engine process 'engine' (pid file {fifo}) not running: "
            f"pid file {fifo} is a FIFO, not a regular file"
        }
    # Replaced by a regular file naming the worker: up again, and the reason is gone.
    fifo.unlink()
    fifo.write_text("4194401\n")
    result = c.collect()
    assert (result.errors, series(result)) == ([], WORKER)
    assert c.readiness() == {"engine:engine": None}
