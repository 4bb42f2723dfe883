"""GET /engine/healthz: the engine's liveness from its loops' heartbeats.

The verdicts on fake clocks first (exact bodies), the real metric store read back
through its render(), then a real sidecar beside a real engine process that beats
with tickscope.shim over OTLP: 200 while it beats, 503 naming the loop once it stops
(within max_age plus an export), 200 again when a restarted engine beats; the grace
before a first beat; no loop configured; the probe open with basic auth on.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml
from prometheus_client import CollectorRegistry

from helpers.otlp_metrics import gauge, histogram, histogram_point, number_point, request
from helpers.sidecar import ROOT, SidecarProcess, StartSidecar, http_get, run_cli
from tickscope.agent.config import ConfigError, load_config
from tickscope.agent.status import HeartbeatStatus, Status
from tickscope.collectors.engine.heartbeat import (
    HEARTBEAT_METRIC,
    EngineHeartbeats,
    HeartbeatConfig,
)
from tickscope.exporters.otlpmetrics import MetricsConfig, MetricStore

T0 = 1_750_000_000.0


class Clocks:
    def __init__(self) -> None:
        self.wall_now = T0
        self.mono_now = 500.0

    def wall(self) -> float:
        return self.wall_now

    def monotonic(self) -> float:
        return self.mono_now

    def advance(self, seconds: float) -> None:
        self.wall_now += seconds
        self.mono_now += seconds


def judge(
    configs: list[HeartbeatConfig], series: list[tuple[dict[str, str], float]]
) -> tuple[EngineHeartbeats, Clocks]:
    clocks = Clocks()
    return EngineHeartbeats(configs, lambda: series, clocks.wall, clocks.monotonic), clocks


# --- the verdicts -----------------------------------------------------------------------------


def test_no_loop_configured_is_ok_with_a_note() -> None:
    heartbeats, _ = judge([], [({"loop": "main"}, 0.0)])
    report = heartbeats.check()
    assert report.healthy
    assert report.to_json() == {
        "status": "ok",
        "note": "no engine heartbeats configured (engine.heartbeats): the engine's loops are "
        "not checked",
        "loops": [],
    }


def test_fresh_then_stale_at_exactly_max_age() -> None:
    series = [({"loop": "main", "job": "bot"}, T0 - 1.0)]
    heartbeats, clocks = judge([HeartbeatConfig(loop="main", max_age=30.0)], series)
    assert heartbeats.check().to_json() == {
        "status": "ok",
        "loops": [{"loop": "main", "status": "ok", "age_seconds": 1.0, "max_age_seconds": 30.0}],
    }
    clocks.advance(29.0)  # age 30: at the limit is still fresh
    assert heartbeats.check().healthy
    clocks.advance(0.5)
    report = heartbeats.check()
    assert not report.healthy and report.stale == ["main"]
    assert report.to_json() == {
        "status": "unhealthy",
        "reason": "stale engine heartbeats: main (last heartbeat 30.5s ago, limit 30s)",
        "stale": ["main"],
        "loops": [
            {
                "loop": "main",
                "status": "stale",
                "age_seconds": 30.5,
                "max_age_seconds": 30.0,
                "reason": "last heartbeat 30.5s ago, limit 30s",
            }
        ],
    }
    series[0] = ({"loop": "main", "job": "bot"}, clocks.wall_now)  # it beats again
    assert heartbeats.check().healthy


def test_grace_before_the_first_beat_then_missing() -> None:
    series: list[tuple[dict[str, str], float]] = []
    heartbeats, clocks = judge([HeartbeatConfig(loop="main", grace=60.0)], series)
    clocks.advance(12.5)
    assert heartbeats.check().to_json() == {
        "status": "ok",
        "loops": [
            {
                "loop": "main",
                "status": "waiting",
                "age_seconds": None,
                "max_age_seconds": 30.0,
                "reason": "no heartbeat yet; grace ends in 47.5s",
            }
        ],
    }
    clocks.advance(47.5)
    body = heartbeats.check().to_json()
    assert body["status"] == "unhealthy" and body["stale"] == ["main"]
    assert body["loops"][0]["status"] == "missing"
    assert body["reason"] == (
        "stale engine heartbeats: main (no heartbeat received in the 60s since the sidecar "
        "started (grace 60s))"
    )


def test_grace_zero_and_grace_does_not_excuse_a_stale_beat() -> None:
    heartbeats, _ = judge([HeartbeatConfig(loop="main", grace=0)], [])
    assert heartbeats.check().to_json()["loops"][0]["status"] == "missing"
    # Within the grace, a beat that is there and old is judged: the engine is stuck.
    old = [({"loop": "main"}, T0 - 31.0)]
    heartbeats, _ = judge([HeartbeatConfig(loop="main", grace=600)], old)
    assert heartbeats.check().stale == ["main"]


def test_a_loop_seen_and_then_expired_is_missing_at_once() -> None:
    series = [({"loop": "main"}, T0)]
    heartbeats, clocks = judge([HeartbeatConfig(loop="main", grace=600)], series)
    assert heartbeats.check().healthy
    series.clear()  # the store dropped it (metrics.stale_after without an export)
    clocks.advance(1.0)
    body = heartbeats.check().to_json()
    assert body["loops"][0] == {
        "loop": "main",
        "status": "missing",
        "age_seconds": None,
        "max_age_seconds": 30.0,
        "reason": "no heartbeat exported for longer than metrics.stale_after",
    }


def test_the_newest_series_counts_and_only_configured_loops_are_judged() -> None:
    """Beats of an earlier engine process (another series of the same loop) and of loops
    nobody configured change nothing; non-finite values and series without a loop label
    are ignored; a beat a little in the future is age 0."""
    series = [
        ({"loop": "main", "job": "bot", "instance": "old"}, T0 - 500.0),
        ({"loop": "main", "job": "bot", "instance": "new"}, T0 - 2.0),
        ({"loop": "main", "job": "bot", "instance": "nan"}, float("nan")),
        ({"loop": "feed"}, T0 + 0.25),
        ({"loop": "unconfigured"}, T0 - 10_000.0),
        ({"job": "no-loop-label"}, T0),
    ]
    configs = [HeartbeatConfig(loop="main", max_age=5), HeartbeatConfig(loop="feed", max_age=5)]
    heartbeats, _ = judge(configs, series)
    assert heartbeats.newest_beats() == {
        "main": T0 - 2.0,
        "feed": T0 + 0.25,
        "unconfigured": T0 - 10_000.0,
    }
    body = heartbeats.check().to_json()
    assert body["status"] == "ok"
    assert [(h["loop"], h["age_seconds"]) for h in body["loops"]] == [("main", 2.0), ("feed", 0.0)]


def test_several_loops_name_only_the_stale_ones() -> None:
    series = [({"loop": "main"}, T0 - 1.0), ({"loop": "feed"}, T0 - 100.0)]
    configs = [
        HeartbeatConfig(loop="main"),
        HeartbeatConfig(loop="feed", max_age=60),
        HeartbeatConfig(loop="risk", grace=0),
    ]
    heartbeats, _ = judge(configs, series)
    body = heartbeats.check().to_json()
    assert body["stale"] == ["feed", "risk"]
    assert body["reason"] == (
        "stale engine heartbeats: feed (last heartbeat 100.0s ago, limit 60s); risk (no "
        "heartbeat received in the 0s since the sidecar started (grace 0s))"
    )


# --- the config -------------------------------------------------------------------------------


def test_config_defaults_and_durations() -> None:
    config = load_config(
        None,
        {
            "TICKSCOPE_ENGINE__HEARTBEATS": '[{"loop": "main"}, {"loop": "feed", "max_age": "2m", "grace": "0s"}]'
        },
    )
    assert [(h.loop, h.max_age, h.grace) for h in config.engine.heartbeats] == [
        ("main", 30.0, 60.0),
        ("feed", 120.0, 0.0),
    ]
    assert load_config(None, {}).engine.heartbeats == []


@pytest.mark.parametrize(
    ("heartbeats", "extra", "message"),
    [
        ([{"loop": "main"}, {"loop": "main"}], {}, "loop 'main' is listed twice"),
        ([{"loop": "main loop"}], {}, "engine.heartbeats[0].loop"),
        ([{"loop": "main", "max_age": 0}], {}, "engine.heartbeats[0].max_age"),
        ([{"loop": "main", "grace": "-1s"}], {}, "engine.heartbeats[0].grace"),
        ([{"loop": "main", "maxage": "3s"}], {}, "engine.heartbeats[0].maxage"),
        ([{}], {}, "engine.heartbeats[0].loop"),
        ([{"loop": "main"}], {"metrics": {"enabled": False}}, "engine.heartbeats needs"),
        (
            [{"loop": "main"}],
            {"receiver": {"http": {"enabled": False}, "grpc": {"enabled": False}}},
            "engine.heartbeats needs",
        ),
    ],
)
def test_config_mistakes(
    heartbeats: list[dict[str, Any]], extra: dict[str, Any], message: str, tmp_path: Path
) -> None:
    path = tmp_path / "tickscope.yaml"
    path.write_text(yaml.safe_dump({"engine": {"heartbeats": heartbeats}, **extra}))
    with pytest.raises(ConfigError) as failure:
        load_config(str(path), {})
    assert message in str(failure.value)
    result = run_cli("check-config", str(path))
    assert result.returncode == 2 and message in result.stderr + result.stdout


# --- the metric store's gauge_values() ---------------------------------------------


def test_gauge_values_reads_the_stores_series() -> None:
    store = MetricStore(MetricsConfig(), CollectorRegistry())
    scope = ("tickscope.shim", "0.1.0")
    beat = T0 + 0.123456  # the full double, not a rounded rendering
    store.ingest(
        request(
            gauge(
                "engine.loop.heartbeat.timestamp",
                number_point(beat, 1.0, attributes={"loop": "main"}),
                number_point(T0 - 5.0, 1.0, attributes={"loop": 'we"ird\\'}),
                unit="s",
            ),
            histogram(
                "engine.loop.iteration.duration",
                histogram_point([1.0], [1, 0], 0.5, 1.0, attributes={"loop": "main"}),
                unit="s",
            ),
            resource={"service.name": "bot"},
            scope=scope,
        )
    )
    got = sorted(store.gauge_values(HEARTBEAT_METRIC), key=lambda s: s[1])
    assert got == [
        (
            {
                "loop": 'we"ird\\',
                "job": "bot",
                "otel_scope_name": "tickscope.shim",
                "otel_scope_version": "0.1.0",
            },
            T0 - 5.0,
        ),
        (
            {
                "loop": "main",
                "job": "bot",
                "otel_scope_name": "tickscope.shim",
                "otel_scope_version": "0.1.0",
            },
            beat,
        ),
    ]
    assert MetricStore(MetricsConfig(), CollectorRegistry()).gauge_values(HEARTBEAT_METRIC) == []
    # Not a gauge: the histogram's family is not read.
    assert store.gauge_values("engine_loop_iteration_duration_seconds") == []
    assert HEARTBEAT_METRIC == "engine_loop_heartbeat_timestamp_seconds"


# --- a real sidecar, a real engine --------------------------------------------------------------

ENGINE = textwrap.dedent(
    """
    # A stand-in engine: its main loop beats through tickscope.shim until the stop file
    # appears, then hangs (the process and its metrics exporter live on).
    import sys, threading, time
    from pathlib import Path
    from tickscope import shim

    service, endpoint, interval_ms, stop = sys.argv[1:5]
    shim.configure(
        service_name=service, endpoint=endpoint, metric_export_interval_millis=int(interval_ms),
        instrument_ccxt=False, runtime_metrics=False,
    )
    stop = Path(stop)
    last = 0.0
    print("beating", flush=True)
    while not stop.exists():
        shim.heartbeat("main")
        last = time.time()
        time.sleep(0.02)
    print(f"stopped {last!r}", flush=True)
    threading.Event().wait()  # stuck: the loop never comes round again
    """
)

EXPORT_MS = 200
MAX_AGE = 2.0


class Engine:
    def __init__(self, directory: Path, endpoint: str, service: str = "hb-engine") -> None:
        script = directory / "engine.py"
        script.write_text(ENGINE)
        self.stop_file = directory / f"stop-{time.monotonic_ns()}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "TICKSCOPE_"))}
        self.proc = subprocess.Popen(
            [sys.executable, str(script), service, endpoint, str(EXPORT_MS), str(self.stop_file)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        assert self.proc.stdout is not None
        assert self.proc.stdout.readline().strip() == "beating"

    def stop_beating(self) -> float:
        """The Unix time of the engine's last beat."""
        self.stop_file.touch()
        assert self.proc.stdout is not None
        word, last = self.proc.stdout.readline().split()
        assert word == "stopped"
        return float(last)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    started: list[Engine] = []
    yield started
    for engine in started:
        engine.kill()


def engine_healthz(sidecar: SidecarProcess) -> tuple[int, dict[str, Any]]:
    r = sidecar.get("/engine/healthz")
    assert r.headers["content-type"].startswith("application/json"), r.headers
    return r.status, r.json()


def wait_for(sidecar: SidecarProcess, status: int, timeout: float) -> tuple[float, dict[str, Any]]:
    """Poll /engine/healthz every 20 ms until it answers `status`: (Unix time, body)."""
    deadline = time.monotonic() + timeout
    while True:
        code, body = engine_healthz(sidecar)
        if code == status:
            return time.time(), body
        assert time.monotonic() < deadline, f"no {status} within {timeout}s: {code} {body}"
        time.sleep(0.02)


def test_beats_200_stuck_503_restarted_200(
    start_sidecar: StartSidecar, engines: list[Engine], tmp_path: Path
) -> None:
    sidecar = start_sidecar(
        {"engine": {"heartbeats": [{"loop": "main", "max_age": f"{MAX_AGE}s", "grace": "60s"}]}}
    )
    status, body = engine_healthz(sidecar)
    assert status == 200 and body["loops"][0]["status"] == "waiting", body

    engine = Engine(tmp_path, sidecar.otlp_http_url)
    engines.append(engine)
    _, body = wait_for(sidecar, 200, 10)
    wait_until_ok = time.monotonic() + 10
    while body["loops"][0]["status"] != "ok":
        assert time.monotonic() < wait_until_ok, body
        _, body = wait_for(sidecar, 200, 1)
    # While it beats, every answer is 200 and the age stays near one export interval.
    ages = []
    for _ in range(40):
        status, body = engine_healthz(sidecar)
        assert status == 200, body
        ages.append(body["loops"][0]["age_seconds"])
        time.sleep(0.05)
    assert max(ages) < EXPORT_MS / 1000 + 1.0, ages
    families = sidecar.families()
    beats = families["engine_loop_heartbeat_timestamp_seconds"].samples
    assert [(b.labels["loop"], b.labels["job"]) for b in beats] == [("main", "hb-engine")]
    first_instance = beats[0].labels["instance"]  # service.instance.id: one per process
    counts = [
        s
        for s in families["engine_loop_iteration_duration_seconds"].samples
        if s.name.endswith("_count")
    ]
    assert len(counts) == 1 and counts[0].value > 10

    # The loop stops; the process (and its exporter) does not.
    last = engine.stop_beating()
    flipped, body = wait_for(sidecar, 503, MAX_AGE + 5)
    waited = flipped - last
    print(f"503 {waited:.2f}s after the last beat (max_age {MAX_AGE}s, export every {EXPORT_MS}ms)")
    assert MAX_AGE <= waited <= MAX_AGE + EXPORT_MS / 1000 + 0.8, waited
    assert body["status"] == "unhealthy" and body["stale"] == ["main"]
    assert body["reason"].startswith("stale engine heartbeats: main (last heartbeat ")
    (loop,) = body["loops"]
    assert loop["status"] == "stale" and loop["age_seconds"] > MAX_AGE
    # The status page shows the same verdict, in JSON and as text.
    (shown,) = sidecar.get("/?format=json").json()["heartbeats"]
    assert (shown["loop"], shown["status"], shown["max_age_seconds"]) == ("main", "stale", MAX_AGE)
    assert shown["age_seconds"] > MAX_AGE and shown["reason"].startswith("last heartbeat ")
    page = sidecar.get("/").text.splitlines()
    (line,) = [ln for ln in page if ln.startswith("  main ")]
    assert (
        line.startswith("  main             STALE    last beat ") and f"limit {MAX_AGE:g}s" in line
    )
    # The value the probe judged is the one /metrics serves: the last beat, to the microsecond.
    family = sidecar.families()["engine_loop_heartbeat_timestamp_seconds"]
    (sample,) = family.samples
    assert sample.value == pytest.approx(last, abs=0.001)
    assert sidecar.proc is not None and engine.proc.poll() is None  # stuck, not dead

    # The kubelet restarts the container: the new process's first export makes it 200.
    engine.kill()
    assert engine_healthz(sidecar)[0] == 503  # the old beat is judged until then
    restarted = Engine(tmp_path, sidecar.otlp_http_url)
    engines.append(restarted)
    started = time.time()
    back, body = wait_for(sidecar, 200, 10)
    print(f"200 again {back - started:.2f}s after the new engine's first beat")
    assert body["loops"][0]["status"] == "ok"
    assert back - started <= 2 * EXPORT_MS / 1000 + 1.0
    # The new process is a new series (its own service.instance.id); the old one's last
    # beat stays beside it until metrics.stale_after, and the newest of them counts.
    # (/metrics is rendered at most once a second: the first scrape may be the cached one.)
    families = sidecar.families_when(
        lambda f: len(f["engine_loop_heartbeat_timestamp_seconds"].samples) == 2,
        "the restarted engine's series on /metrics",
        timeout=5,
    )
    beats = families["engine_loop_heartbeat_timestamp_seconds"].samples
    instances = {b.labels["instance"]: b.value for b in beats}
    assert len(instances) == 2 and instances[first_instance] == pytest.approx(last, abs=0.001)


def test_status_page_text_of_each_heartbeat_verdict() -> None:
    status = Status(
        version="1.2.3",
        uptime_seconds=5.0,
        ready=True,
        heartbeats=[
            HeartbeatStatus("main", "ok", 0.42, 30.0),
            HeartbeatStatus("ws", "waiting", None, 10.0, "no heartbeat yet; grace ends in 55.0s"),
            HeartbeatStatus("orders", "stale", 31.25, 30.0, "last heartbeat 31.2s ago, limit 30s"),
        ],
    )
    text = status.to_text()
    section = text[text.index("engine heartbeats") :].splitlines()[:4]
    assert section == [
        "engine heartbeats (/engine/healthz):",
        "  main             ok       last beat 0.4s ago   limit 30s",
        "  ws               waiting  last beat never   limit 10s   "
        "(no heartbeat yet; grace ends in 55.0s)",
        "  orders           STALE    last beat 31.2s ago   limit 30s   "
        "(last heartbeat 31.2s ago, limit 30s)",
    ]
    assert status.to_json()["heartbeats"][1] == {
        "loop": "ws",
        "status": "waiting",
        "age_seconds": None,
        "max_age_seconds": 10.0,
        "reason": "no heartbeat yet; grace ends in 55.0s",
    }
    assert "engine heartbeats" not in Status("1", 0.0, True).to_text()


def test_grace_then_missing(start_sidecar: StartSidecar) -> None:
    sidecar = start_sidecar({"engine": {"heartbeats": [{"loop": "main", "grace": "1.5s"}]}})
    started = time.time()
    status, body = engine_healthz(sidecar)
    assert status == 200
    assert body["loops"][0]["status"] == "waiting"
    assert body["loops"][0]["reason"].startswith("no heartbeat yet; grace ends in ")
    flipped, body = wait_for(sidecar, 503, 5)
    assert flipped - started <= 1.5 + 0.5
    assert body["stale"] == ["main"] and body["loops"][0]["status"] == "missing"


def test_nothing_configured_is_200_with_a_note(start_sidecar: StartSidecar) -> None:
    sidecar = start_sidecar()
    status, body = engine_healthz(sidecar)
    assert status == 200
    assert body == {
        "status": "ok",
        "note": "no engine heartbeats configured (engine.heartbeats): the engine's loops are "
        "not checked",
        "loops": [],
    }
    started = next(e for e in sidecar.logs if e.get("msg") == "tickscope started")
    assert started["engine_heartbeats"] == []
    listening = next(e for e in sidecar.logs if e.get("msg") == "admin server listening")
    assert "/engine/healthz" in listening["endpoints"].split()


def test_the_probe_needs_no_credentials(start_sidecar: StartSidecar, tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()
    web = tmp_path / "web-config.yml"
    web.write_text(yaml.safe_dump({"basic_auth_users": {"prometheus": hashed}}))
    sidecar = start_sidecar(
        {
            "server": {"web_config_file": str(web)},
            "engine": {"heartbeats": [{"loop": "main", "grace": "0s"}]},
        }
    )
    assert sidecar.get("/metrics").status == 401
    r = http_get(sidecar.url + "/engine/healthz")
    assert r.status == 503 and json.loads(r.body)["stale"] == ["main"]
