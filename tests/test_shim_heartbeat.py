"""shim.heartbeat / shim.loop: the engine loop's heartbeat gauge and iteration histogram,
read with the SDK's in-memory reader, on fake clocks, value for value."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from tickscope import shim
from tickscope.collectors.engine import heartbeat as sidecar_heartbeat
from tickscope.exporters.otlpmetrics.names import metric_name
from tickscope.shim.heartbeat import (
    DURATION_BUCKETS,
    HEARTBEAT_INSTRUMENT,
    ITERATION_INSTRUMENT,
    Heartbeats,
)

WALL_OFFSET = 1_750_000_000.0  # the fake wall clock is the fake monotonic one plus this


class Clocks:
    def __init__(self, start: float = 100.0) -> None:
        self.now = start
        self.step = 0.0  # a wall-clock step (NTP) on top of the offset

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + WALL_OFFSET + self.step


@pytest.fixture
def setup() -> Iterator[tuple[Heartbeats, Clocks, InMemoryMetricReader]]:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    clocks = Clocks()
    yield Heartbeats(provider, wall=clocks.wall, monotonic=clocks.monotonic), clocks, reader
    provider.shutdown()


def collect(reader: InMemoryMetricReader) -> dict[str, dict[str, Any]]:
    """instrument name -> loop -> gauge value, or (count, sum, bucket counts, bounds)."""
    out: dict[str, dict[str, Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics if data else []:
        for sm in rm.scope_metrics:
            assert sm.scope.name == "tickscope.shim"
            for metric in sm.metrics:
                points = out.setdefault(metric.name, {})
                point: Any
                for point in metric.data.data_points:
                    loop = str(point.attributes["loop"])
                    assert dict(point.attributes) == {"loop": loop}
                    if metric.name == HEARTBEAT_INSTRUMENT:
                        assert metric.unit == "s"
                        points[loop] = point.value
                    else:
                        assert metric.unit == "s"
                        points[loop] = (
                            point.count,
                            point.sum,
                            list(point.bucket_counts),
                            tuple(point.explicit_bounds),
                        )
    return out


def bucket_counts(*values: float) -> list[int]:
    counts = [0] * (len(DURATION_BUCKETS) + 1)
    for v in values:
        counts[
            next((i for i, b in enumerate(DURATION_BUCKETS) if v <= b), len(DURATION_BUCKETS))
        ] += 1
    return counts


def test_heartbeat_reports_the_last_beat_and_the_time_between_beats(
    setup: tuple[Heartbeats, Clocks, InMemoryMetricReader],
) -> None:
    hb, clocks, reader = setup
    assert collect(reader) == {}  # nothing before the first beat
    hb.beat("main")
    assert collect(reader) == {HEARTBEAT_INSTRUMENT: {"main": 100.0 + WALL_OFFSET}}
    for step in (0.5, 1.5, 40.0):
        clocks.now += step
        hb.beat("main")
    clocks.now += 7.0  # no beat: the gauge still says when the last one was
    got = collect(reader)
    assert got[HEARTBEAT_INSTRUMENT] == {"main": 142.0 + WALL_OFFSET}
    assert got[ITERATION_INSTRUMENT] == {
        "main": (3, 42.0, bucket_counts(0.5, 1.5, 40.0), DURATION_BUCKETS)
    }


def test_loops_are_reported_apart(setup: tuple[Heartbeats, Clocks, InMemoryMetricReader]) -> None:
    hb, clocks, reader = setup
    hb.beat("main")
    clocks.now = 103.0
    hb.beat("risk")
    clocks.now = 104.0
    hb.beat("main")
    got = collect(reader)
    assert got[HEARTBEAT_INSTRUMENT] == {"main": 104.0 + WALL_OFFSET, "risk": 103.0 + WALL_OFFSET}
    assert got[ITERATION_INSTRUMENT] == {"main": (1, 4.0, bucket_counts(4.0), DURATION_BUCKETS)}


def test_a_wall_clock_step_moves_the_gauge_not_the_durations(
    setup: tuple[Heartbeats, Clocks, InMemoryMetricReader],
) -> None:
    """Beats are kept on the monotonic clock and turned into Unix time when read: after an
    NTP step the gauge is in the new wall time (what the sidecar compares it with) and
    the iteration durations are the real ones."""
    hb, clocks, reader = setup
    hb.beat("main")
    clocks.now = 102.0
    clocks.step = -3600.0
    hb.beat("main")
    got = collect(reader)
    assert got[HEARTBEAT_INSTRUMENT] == {"main": 102.0 + WALL_OFFSET - 3600.0}
    assert got[ITERATION_INSTRUMENT]["main"][:2] == (1, 2.0)


def test_loop_as_a_block_times_the_body_and_beats_on_entry_and_exit(
    setup: tuple[Heartbeats, Clocks, InMemoryMetricReader],
) -> None:
    hb, clocks, reader = setup
    with hb.loop("main"):
        assert collect(reader)[HEARTBEAT_INSTRUMENT] == {"main": 100.0 + WALL_OFFSET}
        clocks.now = 100.25
    clocks.now = 130.0  # the wait between iterations is not the body's
    step = hb.loop("main")
    with pytest.raises(KeyError), step:
        clocks.now = 131.0
        raise KeyError("the iteration failed")  # it still ended: timed, and re-raised
    got = collect(reader)
    assert got[HEARTBEAT_INSTRUMENT] == {"main": 131.0 + WALL_OFFSET}
    assert got[ITERATION_INSTRUMENT] == {
        "main": (2, 1.25, bucket_counts(0.25, 1.0), DURATION_BUCKETS)
    }


def test_loop_decorates_sync_and_async_functions(
    setup: tuple[Heartbeats, Clocks, InMemoryMetricReader],
) -> None:
    hb, clocks, reader = setup

    @hb.loop("sync")
    def step(x: int) -> int:
        clocks.now += 0.003
        return x * 2

    @hb.loop("async")
    async def astep(x: int) -> int:
        await asyncio.sleep(0)
        clocks.now += 0.02
        return x + 1

    assert step.__name__ == "step" and astep.__name__ == "astep"
    assert [step(1), step(2)] == [2, 4]

    async def main() -> list[int]:
        return [await astep(1), await astep(2), await astep(3)]

    assert asyncio.run(main()) == [2, 3, 4]
    got = collect(reader)
    assert got[HEARTBEAT_INSTRUMENT] == {
        "sync": pytest.approx(100.006 + WALL_OFFSET, abs=1e-6),
        "async": pytest.approx(100.066 + WALL_OFFSET, abs=1e-6),
    }
    count, total, counts, _ = got[ITERATION_INSTRUMENT]["sync"]
    assert (count, counts) == (2, bucket_counts(0.003, 0.003))
    assert total == pytest.approx(0.006, abs=1e-9)
    count, total, counts, _ = got[ITERATION_INSTRUMENT]["async"]
    assert (count, counts) == (3, bucket_counts(0.02, 0.02, 0.02))
    assert total == pytest.approx(0.06, abs=1e-9)


@pytest.mark.parametrize("name", ["", "a" * 65, "main loop", "ü", "x\n", 3, None])
def test_loop_names_are_code_not_data(
    setup: tuple[Heartbeats, Clocks, InMemoryMetricReader], name: Any
) -> None:
    hb, _, reader = setup
    with pytest.raises(ValueError, match="heartbeat loop name"):
        hb.beat(name)
    with pytest.raises(ValueError, match="heartbeat loop name"):
        hb.loop(name)
    assert collect(reader) == {}


def test_the_shim_and_the_sidecar_accept_the_same_names() -> None:
    from tickscope.shim.heartbeat import _LOOP_NAME

    assert f"^{_LOOP_NAME.pattern}$" == sidecar_heartbeat.LOOP_NAME
    for name in ("main", "md-feed:binance", "risk.v2", "A_1", "a" * 64):
        assert _LOOP_NAME.fullmatch(name)
        sidecar_heartbeat.HeartbeatConfig(loop=name)
    for bad in ("", "a" * 65, "main loop", "x\n", "ü"):
        assert not _LOOP_NAME.fullmatch(bad)
        with pytest.raises(ValueError, match="loop"):
            sidecar_heartbeat.HeartbeatConfig(loop=bad)


def test_loops_past_the_limit_are_not_recorded(caplog: pytest.LogCaptureFixture) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    clocks = Clocks()
    hb = Heartbeats(provider, wall=clocks.wall, monotonic=clocks.monotonic, max_loops=2)
    with caplog.at_level(logging.WARNING, logger="tickscope.shim"):
        for name in ("a", "b", "c", "d", "c", "a"):
            hb.beat(name)
        with hb.loop("e"):
            pass
    got = collect(reader)
    assert sorted(got[HEARTBEAT_INSTRUMENT]) == ["a", "b"]
    assert got[ITERATION_INSTRUMENT] == {"a": (1, 0.0, bucket_counts(0.0), DURATION_BUCKETS)}
    warnings = [r.getMessage() for r in caplog.records if r.name == "tickscope.shim"]
    assert warnings == ["more than 2 heartbeat loop names: 'c' and later ones are not recorded"]
    provider.shutdown()


def test_beats_from_threads_while_the_reader_collects(
    setup: tuple[Heartbeats, Clocks, InMemoryMetricReader],
) -> None:
    """Each thread its own loop (one caller per loop name), new names appearing while the
    exporter's thread reads: every beat is counted, nothing raises."""
    hb, _, reader = setup
    names = [f"worker-{i}" for i in range(8)]
    stop = threading.Event()
    errors: list[BaseException] = []

    def collect_all_the_time() -> None:
        while not stop.is_set():
            try:
                reader.get_metrics_data()
            except BaseException as error:  # pragma: no cover - the failure being tested
                errors.append(error)

    collector = threading.Thread(target=collect_all_the_time)
    collector.start()

    def beat(name: str) -> None:
        for _ in range(2000):
            hb.beat(name)

    threads = [threading.Thread(target=beat, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    collector.join()
    assert errors == []
    got = collect(reader)
    assert sorted(got[HEARTBEAT_INSTRUMENT]) == sorted(names)
    assert {n: v[0] for n, v in got[ITERATION_INSTRUMENT].items()} == dict.fromkeys(names, 1999)


def test_prometheus_names_on_the_sidecar() -> None:
    """The names the sidecar's metric store gives the two instruments (units s), which
    /engine/healthz, the alerts and the dashboards use."""
    assert metric_name(HEARTBEAT_INSTRUMENT, "s", "gauge") == sidecar_heartbeat.HEARTBEAT_METRIC
    assert sidecar_heartbeat.HEARTBEAT_METRIC == "engine_loop_heartbeat_timestamp_seconds"
    assert (
        metric_name(ITERATION_INSTRUMENT, "s", "histogram")
        == "engine_loop_iteration_duration_seconds"
    )


def test_the_module_functions_use_the_global_provider_and_no_sdk() -> None:
    """shim.heartbeat and shim.loop go to the instance made at import, on the global
    MeterProvider: a proxy until one is set, then that one. Importing them loads no SDK."""
    code = """
import sys
from tickscope import shim
shim.heartbeat("main")  # before any provider: kept, reported once one is set
with shim.loop("step"):
    pass
print(",".join(sorted(m for m in sys.modules if m.startswith("opentelemetry.sdk"))) or "none")
from opentelemetry import metrics
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
reader = InMemoryMetricReader()
metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
shim.heartbeat("main")
names = {}
for rm in reader.get_metrics_data().resource_metrics:
    for sm in rm.scope_metrics:
        for m in sm.metrics:
            names[m.name] = sorted(str(p.attributes["loop"]) for p in m.data.data_points)
print(sorted(names.items()))
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    result = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "none"
    assert lines[1] == str(
        [
            (HEARTBEAT_INSTRUMENT, ["main", "step"]),
            (ITERATION_INSTRUMENT, ["main"]),
        ]
    )
    assert shim.heartbeat.__module__ == "tickscope.shim.heartbeat"
    assert isinstance(shim.loop("main"), shim.heartbeat.__globals__["LoopTimer"])
