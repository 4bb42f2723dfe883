from __future__ import annotations

import os
from pathlib import Path

import pytest

from tickscope.collectors.engine.collector import limits_from_env
from tickscope.collectors.engine.config import EngineProcessConfig
from tickscope.collectors.engine.procfs import (
    parse_max_fds,
    parse_swap_bytes,
    read_max_fds,
    read_swap_bytes,
)
from tickscope.collectors.engine.quantity import parse_quantity
from tickscope.collectors.host.meminfo import parse_meminfo


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("536870912", 536870912.0),
        ("512Mi", 512 * 2**20),
        ("1Gi", 2**30),
        ("1.5Gi", 1.5 * 2**30),
        ("2G", 2e9),
        ("500m", 0.5),
        ("2", 2.0),
        ("0.25", 0.25),
        ("1e3", 1000.0),
        ("100k", 100000.0),
        (" 4 ", 4.0),
    ],
)
def test_kubernetes_quantities(text: str, value: float) -> None:
    assert parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "5 Mi", "-1", "1KB", "Mi"])
def test_not_quantities(text: str) -> None:
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        parse_quantity(text)


def test_limits_from_downward_api_env() -> None:
    config = EngineProcessConfig(name="engine", process_name="x", cpu_limit_divisor="1m")
    limits = limits_from_env(
        config, {"ENGINE_MEMORY_LIMIT": "1073741824", "ENGINE_CPU_LIMIT": "1500"}
    )
    assert limits.memory_bytes == 2**30
    assert limits.cpu_cores == pytest.approx(1.5)


def test_limits_absent_or_zero_mean_unknown() -> None:
    config = EngineProcessConfig(name="engine", process_name="x")
    assert limits_from_env(config, {}).memory_bytes is None
    assert limits_from_env(config, {"ENGINE_MEMORY_LIMIT": "0"}).memory_bytes is None


def test_bad_limit_names_the_variable() -> None:
    config = EngineProcessConfig(name="engine", process_name="x", memory_limit_env="MEM")
    with pytest.raises(
        ValueError, match=r"engine process 'engine': env MEM: 'lots' is not a Kubernetes quantity"
    ):
        limits_from_env(config, {"MEM": "lots"})


def test_meminfo_names_follow_node_exporter() -> None:
    text = (
        "MemTotal:       16307692 kB\n"
        "MemAvailable:   12000000 kB\n"
        "Active(anon):     102400 kB\n"
        "HugePages_Total:       0\n"
        "Hugepagesize:       2048 kB\n"
    )
    assert parse_meminfo(text) == {
        "MemTotal_bytes": 16307692 * 1024.0,
        "MemAvailable_bytes": 12000000 * 1024.0,
        "Active_anon_bytes": 102400 * 1024.0,
        "HugePages_Total": 0.0,
        "Hugepagesize_bytes": 2048 * 1024.0,
    }


FIXTURE_PROC = str(Path(__file__).parent / "fixtures" / "proc")


@pytest.mark.parametrize(
    ("pid", "swap", "max_fds"),
    [
        (4194400, 1536 * 1024.0, 65536.0),  # the fixture engine
        (4194401, 0.0, float("inf")),  # its worker: "unlimited" open files
        (4194403, None, 1024.0),  # a kernel thread: no VmSwap line
    ],
)
def test_procfs_reads_of_fixture_processes(pid: int, swap: float | None, max_fds: float) -> None:
    assert read_swap_bytes(pid, FIXTURE_PROC) == swap
    assert read_max_fds(pid, FIXTURE_PROC) == max_fds


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("Name:\tx\nVmRSS:\t  100 kB\nVmSwap:\t    12 kB\nThreads:\t1\n", 12 * 1024.0),
        ("VmSwap:\t       0 kB\n", 0.0),
        ("Name:\tkthreadd\nThreads:\t1\n", None),
    ],
)
def test_parse_swap_bytes(status: str, expected: float | None) -> None:
    assert parse_swap_bytes(status) == expected


@pytest.mark.parametrize(
    ("limits", "expected"),
    [
        ("Max open files            1024                 4096                 files\n", 1024.0),
        (
            "Max open files            unlimited            unlimited            files\n",
            float("inf"),
        ),
        ("Max processes             63421                63421                processes\n", None),
    ],
)
def test_parse_max_fds(limits: str, expected: float | None) -> None:
    assert parse_max_fds(limits) == expected


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="needs Linux /proc")
def test_procfs_reads_of_this_process() -> None:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    expected = float("inf") if soft == resource.RLIM_INFINITY else float(soft)
    assert read_max_fds(os.getpid()) == expected
    # Lowering the soft limit shows at once in /proc/self/limits.
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
    try:
        assert read_max_fds(os.getpid()) == 256.0
    finally:
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (soft, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
        )
