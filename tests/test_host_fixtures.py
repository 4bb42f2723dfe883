"""Host subsystems against fixture /proc and /sys trees, with exact expected values.

As node_exporter tests its collectors (fixtures/proc, fixtures/sys, and an
end-to-end output compared byte for byte) and client_python its process collector:
every subsystem is pointed at tests/fixtures/ through host.procfs / host.sysfs /
host.rootfs, and what it exports is compared with tables written from the fixture
files by hand. stat, netdev and diskstats read through psutil with
psutil.PROCFS_PATH set to the fixture tree, so these tables check psutil's reading
as much as ours; the shapes the fixtures do not show (older kernels, escapes, bad
lines) are written into a temporary tree, or, for the parsers of the subsystems
that read directly, given to the parser on its own.

Set TICKSCOPE_UPDATE_FIXTURES=1 to rewrite tests/fixtures/host-e2e-output.prom from
the current output (then read the diff: it is the test).
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import threading
from collections.abc import Callable, Iterable
from pathlib import Path

import psutil
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from pydantic import ValidationError

from tickscope.collectors.engine import EngineConfig, EngineProcessCollector
from tickscope.collectors.host import HostCollector
from tickscope.collectors.host.config import (
    DiskConfig,
    FilesystemConfig,
    HostConfig,
    NetworkConfig,
)
from tickscope.collectors.host.cpu import CPUCollector, parse_cpu_times
from tickscope.collectors.host.diskstats import DiskStats, DiskstatsCollector
from tickscope.collectors.host.filefd import FilefdCollector, parse_file_nr
from tickscope.collectors.host.filesystem import (
    FilesystemCollector,
    Mount,
    parse_mounts,
    relative_to_root,
)
from tickscope.collectors.host.hwmon import HwmonCollector
from tickscope.collectors.host.loadavg import LoadavgCollector, parse_loadavg
from tickscope.collectors.host.meminfo import DEFAULT_FIELDS, MeminfoCollector, parse_meminfo
from tickscope.collectors.host.netdev import NetdevCollector
from tickscope.collectors.host.stat import StatCollector
from tickscope.collectors.host.wrap import WrapGuard

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the subsystems read procfs only on Linux"
)

FIXTURES = Path(__file__).parent / "fixtures"
PROC = str(FIXTURES / "proc")
SYS = str(FIXTURES / "sys")
E2E_OUTPUT = FIXTURES / "host-e2e-output.prom"

Labels = tuple[str, ...]


def table(families: Iterable[Metric], *keys: str) -> dict[str, dict[Labels, float]]:
    """Sample name -> (the values of `keys`, in order) -> value."""
    out: dict[str, dict[Labels, float]] = {}
    for family in families:
        for s in family.samples:
            out.setdefault(s.name, {})[tuple(s.labels[k] for k in keys)] = s.value
    return out


def copy_proc(tmp_path: Path) -> Path:
    """A writable copy of the fixture /proc, for the cases that change a file."""
    proc = tmp_path / "proc"
    shutil.copytree(PROC, proc)
    return proc


# --- configuration ----------------------------------------------------------------


def test_roots_default_to_the_real_ones() -> None:
    config = HostConfig()
    assert (config.procfs, config.sysfs, config.rootfs) == ("/proc", "/sys", "/")


def test_roots_are_normalised_absolute_paths() -> None:
    config = HostConfig(procfs="/host/proc/", sysfs="/host//sys", rootfs="/host/")
    assert (config.procfs, config.sysfs, config.rootfs) == ("/host/proc", "/host/sys", "/host")


@pytest.mark.parametrize("key", ["procfs", "sysfs", "rootfs"])
def test_a_relative_root_is_refused(key: str) -> None:
    with pytest.raises(ValidationError, match="must be an absolute path, got 'host/proc'"):
        HostConfig(**{key: "host/proc"})


# --- cpu ----------------------------------------------------------------------------

# /proc/stat's columns are in USER_HZ, 100 on every Linux ABI.
CPU_SECONDS = {
    "0": (1002.12, 4.0, 300.11, 17040.22, 51.0, 0.0, 20.1, 1.04),
    "1": (998.77, 4.02, 298.76, 17099.41, 52.01, 0.0, 12.03, 1.01),
    # cpu2 is offline: the label keeps the kernel's number, as node_exporter does.
    "3": (1013.67, 4.02, 293.44, 17098.26, 50.19, 0.0, 9.08, 1.07),
}
MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def test_cpu_seconds_per_cpu_and_mode() -> None:
    got = table(CPUCollector(PROC).collect(), "cpu", "mode")
    assert got == {
        "node_cpu_seconds_total": {
            (cpu, mode): value
            for cpu, values in CPU_SECONDS.items()
            for mode, value in zip(MODES, values, strict=True)
        }
    }


def test_cpu_times_from_an_old_kernel_without_steal() -> None:
    # Linux 2.6.0-2.6.10 printed seven columns.
    text = "cpu  10 0 10 100 0 0 0\ncpu0 150 25 50 1000 4 1 2\nintr 5 0\n"
    assert parse_cpu_times(text, 100.0) == {
        "0": {
            "user": 1.5,
            "nice": 0.25,
            "system": 0.5,
            "idle": 10.0,
            "iowait": 0.04,
            "irq": 0.01,
            "softirq": 0.02,
        }
    }


# --- stat, loadavg, filefd ------------------------------------------------------------


def test_stat_counters_and_boot_time() -> None:
    got = table(StatCollector(PROC).collect())
    assert got == {
        "node_boot_time_seconds": {(): 1700000000.0},
        "node_context_switches_total": {(): 98765432.0},
        "node_intr_total": {(): 52731944.0},
    }


def write_proc(tmp_path: Path, name: str, text: str) -> str:
    """A /proc of one file, for the shapes the fixture tree does not show."""
    path = tmp_path / "proc" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return str(tmp_path / "proc")


def test_stat_reads_only_the_lines_it_needs(tmp_path: Path) -> None:
    proc = write_proc(tmp_path, "stat", "intr 7 0 0\nctxt 9\nbtime 5\n")
    assert table(StatCollector(proc).collect()) == {
        "node_boot_time_seconds": {(): 5.0},
        "node_context_switches_total": {(): 9.0},
        "node_intr_total": {(): 7.0},
    }


def test_stat_without_btime_or_ctxt_is_an_error(tmp_path: Path) -> None:
    proc = write_proc(tmp_path, "stat", "cpu  1 2 3 4\nintr 7 0 0\nctxt 9\n")
    with pytest.raises(RuntimeError, match=f"^line 'btime' not found in {re.escape(proc)}/stat$"):
        StatCollector(proc).collect()
    proc = write_proc(tmp_path, "stat", "cpu  1 2 3 4\nbtime 5\n")
    with pytest.raises(ValueError, match=f"^no ctxt, intr line in {re.escape(proc)}/stat$"):
        StatCollector(proc).collect()
    assert psutil.PROCFS_PATH == "/proc"


def test_load_averages() -> None:
    got = table(LoadavgCollector(PROC).collect())
    assert got == {
        "node_load1": {(): 0.52},
        "node_load5": {(): 0.38},
        "node_load15": {(): 0.31},
    }


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.52 0.38 0.31 2/345 12345\n", (0.52, 0.38, 0.31)),
        ("12.00 8.50 4.25 17/2048 999999", (12.0, 8.5, 4.25)),
    ],
)
def test_parse_loadavg(text: str, expected: tuple[float, float, float]) -> None:
    assert parse_loadavg(text) == expected


def test_filefd_with_the_kernels_unlimited_maximum() -> None:
    # Linux 5.x+ writes LONG_MAX when fs.file-max was never lowered.
    got = table(FilefdCollector(PROC).collect())
    assert got == {
        "node_filefd_allocated": {(): 4512.0},
        "node_filefd_maximum": {(): 9223372036854775807.0},
    }
    with pytest.raises(ValueError, match="unexpected /proc/sys/fs/file-nr: '4512'"):
        parse_file_nr("4512\n")


# --- meminfo ------------------------------------------------------------------------

MEMINFO_KB = {
    "MemTotal": 16303428,
    "MemFree": 2123456,
    "MemAvailable": 11234567,
    "Buffers": 345678,
    "Cached": 8123456,
    "SwapCached": 1024,
    "Active": 6123456,
    "Inactive": 5234567,
    "SwapTotal": 4194300,
    "SwapFree": 4190000,
    "Dirty": 1464,
    "Writeback": 8,
    "AnonPages": 2234567,
    "Mapped": 456789,
    "Shmem": 98765,
    "Slab": 789012,
    "SReclaimable": 567890,
    "CommitLimit": 12346012,
    "Committed_AS": 7654321,
}


def test_meminfo_default_fields() -> None:
    got = table(MeminfoCollector(procfs=PROC).collect())
    assert got == {f"node_memory_{k}_bytes": {(): v * 1024.0} for k, v in MEMINFO_KB.items()}
    assert {f"{k}_bytes" for k in MEMINFO_KB} == DEFAULT_FIELDS


def test_meminfo_all_fields_as_node_exporter_names_them() -> None:
    got = table(MeminfoCollector(all_fields=True, procfs=PROC).collect())
    lines = (FIXTURES / "proc" / "meminfo").read_text().splitlines()
    assert len(got) == len(lines) == 49
    assert got["node_memory_Active_anon_bytes"] == {(): 2123456 * 1024.0}
    assert got["node_memory_Inactive_file_bytes"] == {(): 5111111 * 1024.0}
    assert got["node_memory_VmallocTotal_bytes"] == {(): 34359738367 * 1024.0}
    assert got["node_memory_HugePages_Total"] == {(): 0.0}  # a count: no unit, no _bytes
    assert got["node_memory_Hugepagesize_bytes"] == {(): 2048 * 1024.0}


def test_meminfo_of_an_old_kernel_leaves_the_missing_fields_out(tmp_path: Path) -> None:
    # Before Linux 3.14 there is no MemAvailable; RHEL 6 kernels also lack Shmem's
    # neighbours. A field the kernel does not write is absent, never 0.
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "meminfo").write_text(
        "MemTotal:        1012348 kB\n"
        "MemFree:          123456 kB\n"
        "Buffers:           23456 kB\n"
        "Cached:           345678 kB\n"
        "SwapTotal:             0 kB\n"
        "SwapFree:              0 kB\n"
    )
    got = table(MeminfoCollector(procfs=str(proc)).collect())
    assert got == {
        "node_memory_MemTotal_bytes": {(): 1012348 * 1024.0},
        "node_memory_MemFree_bytes": {(): 123456 * 1024.0},
        "node_memory_Buffers_bytes": {(): 23456 * 1024.0},
        "node_memory_Cached_bytes": {(): 345678 * 1024.0},
        "node_memory_SwapTotal_bytes": {(): 0.0},
        "node_memory_SwapFree_bytes": {(): 0.0},
    }


def test_parse_meminfo_skips_lines_that_are_not_fields() -> None:
    text = "MemTotal: 10 kB\ngarbage\nDirectMap4k: x kB\nHugePages_Free:  3\n\n"
    assert parse_meminfo(text) == {"MemTotal_bytes": 10240.0, "HugePages_Free": 3.0}


# --- diskstats ----------------------------------------------------------------------

DISKS = {
    # device: reads, writes, sectors read, sectors written, read ms, write ms, io ms
    "dm-0": (1000, 2000, 8000, 16000, 120, 340, 410),
    "nvme0n1": (5321987, 4321098, 345678912, 987654321, 2345678, 3456789, 3210987),
    "sda": (184521, 543210, 9876544, 45678912, 123456, 987654, 456789),
    "sr0": (17, 0, 2056, 0, 33, 0, 40),
}


def expected_disks(disks: dict[str, tuple[int, ...]]) -> dict[str, dict[Labels, float]]:
    columns = {
        "node_disk_reads_completed_total": lambda d: d[0],
        "node_disk_writes_completed_total": lambda d: d[1],
        "node_disk_read_bytes_total": lambda d: d[2] * 512,
        "node_disk_written_bytes_total": lambda d: d[3] * 512,
        "node_disk_read_time_seconds_total": lambda d: d[4] / 1000,
        "node_disk_write_time_seconds_total": lambda d: d[5] / 1000,
        "node_disk_io_time_seconds_total": lambda d: d[6] / 1000,
    }
    return {
        name: {(device,): column(d) for device, d in disks.items()}
        for name, column in columns.items()
    }


def test_diskstats_whole_disks_only() -> None:
    # Left out by the default filter: sda1, sda2, nvme0n1p1 (partitions, which
    # would count their disk's I/O twice), loop0, ram0 and zram0 (pseudo disks).
    got = table(DiskstatsCollector(DiskConfig(), PROC).collect(), "device")
    assert got == expected_disks(DISKS)


def test_diskstats_device_include() -> None:
    config = DiskConfig.model_validate({"devices": {"include": "^(sd|nvme)"}})
    got = table(DiskstatsCollector(config, PROC).collect(), "device")
    # include narrows, and the default exclude still drops the partitions.
    assert got == expected_disks({k: DISKS[k] for k in ("nvme0n1", "sda")})


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        # Linux 2.6-4.17: 14 fields.
        (
            "   8       0 sda 1 2 3 4 5 6 7 8 9 10 11",
            DiskStats(1, 5, 3 * 512, 7 * 512, 4, 8, 10),
        ),
        # Linux 5.5+: 20 fields (discard and flush counts at the end).
        (
            " 259       0 nvme0n1 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17",
            DiskStats(1, 5, 3 * 512, 7 * 512, 4, 8, 10),
        ),
        # Linux 2.6's short partition lines: counts and sectors only, no times.
        ("   3       1 hda1 11 22 33 44", DiskStats(11, 33, 22 * 512, 44 * 512, 0, 0, 0)),
    ],
)
def test_diskstats_line_shapes(tmp_path: Path, line: str, expected: DiskStats) -> None:
    proc = write_proc(tmp_path, "diskstats", line + "\n")
    name = line.split()[2]
    assert DiskstatsCollector(DiskConfig(), proc).read() == {name: expected}


def test_diskstats_refuses_a_line_it_cannot_read(tmp_path: Path) -> None:
    proc = write_proc(tmp_path, "diskstats", "8 0 sda 1 2\n")
    with pytest.raises(ValueError, match=r"not sure how to interpret line '8 0 sda 1 2\\n'"):
        DiskstatsCollector(DiskConfig(), proc).read()


def test_a_missing_diskstats_is_an_error_not_the_real_sys_block(tmp_path: Path) -> None:
    # psutil would read this machine's own /sys/block instead, which it has.
    assert os.path.isdir("/sys/block")
    (tmp_path / "proc").mkdir()
    path = re.escape(str(tmp_path / "proc" / "diskstats"))
    with pytest.raises(
        FileNotFoundError, match=f"^\\[Errno 2\\] No such file or directory: '{path}'$"
    ):
        DiskstatsCollector(DiskConfig(), str(tmp_path / "proc")).read()


def test_a_wrapped_disk_counter_stays_monotonic(tmp_path: Path) -> None:
    proc = copy_proc(tmp_path)
    collector = DiskstatsCollector(DiskConfig(), str(proc))
    first = table(collector.collect(), "device")
    # sda's sectors-written counter wrapped: it reads 1000 now.
    stats = proc / "diskstats"
    stats.write_text(stats.read_text().replace(" 45678912 ", " 1000 "))
    second = table(collector.collect(), "device")
    assert second["node_disk_written_bytes_total"][("sda",)] == (45678912 + 1000) * 512
    second["node_disk_written_bytes_total"][("sda",)] = 45678912 * 512
    assert second == first


# --- netdev -------------------------------------------------------------------------

NICS = {
    # rx bytes, tx bytes, rx packets, tx packets, rx errs, tx errs, rx drop, tx drop
    "docker0": (123456, 234567, 789, 890, 0, 0, 1, 0),
    "eth0": (9876543210, 1234567890, 7654321, 2345678, 12, 5, 34, 6),
}
NET_STEMS = (
    "receive_bytes",
    "transmit_bytes",
    "receive_packets",
    "transmit_packets",
    "receive_errs",
    "transmit_errs",
    "receive_drop",
    "transmit_drop",
)


def expected_nics(nics: dict[str, tuple[int, ...]]) -> dict[str, dict[Labels, float]]:
    return {
        f"node_network_{stem}_total": {(device,): values[i] for device, values in nics.items()}
        for i, stem in enumerate(NET_STEMS)
    }


def test_netdev_leaves_out_loopback_and_veths() -> None:
    got = table(NetdevCollector(NetworkConfig(), PROC).collect(), "device")
    assert got == expected_nics(NICS)


def test_netdev_device_include_keeps_the_default_exclude() -> None:
    # include narrows to eth*/veth*, and the default exclude still drops the veth.
    config = NetworkConfig.model_validate({"devices": {"include": "^(eth|veth)"}})
    got = table(NetdevCollector(config, PROC).collect(), "device")
    assert got == expected_nics({"eth0": NICS["eth0"]})


def test_netdev_device_exclude_replaces_the_default() -> None:
    config = NetworkConfig.model_validate({"devices": {"exclude": "^docker"}})
    got = table(NetdevCollector(config, PROC).collect(), "device")
    assert set(got["node_network_receive_bytes_total"]) == {("eth0",), ("lo",), ("veth1a2b3c4",)}
    assert got["node_network_receive_bytes_total"][("lo",)] == 219953810


def test_a_wrapped_counter_stays_monotonic(tmp_path: Path) -> None:
    proc = copy_proc(tmp_path)
    collector = NetdevCollector(NetworkConfig(), str(proc))
    first = table(collector.collect(), "device")
    assert first["node_network_receive_bytes_total"][("eth0",)] == 9876543210
    # A 32-bit driver counter wrapped: eth0's receive bytes read 1000 now.
    dev = proc / "net" / "dev"
    dev.write_text(dev.read_text().replace("eth0: 9876543210", "eth0:       1000"))
    second = table(collector.collect(), "device")
    assert second["node_network_receive_bytes_total"][("eth0",)] == 9876543210 + 1000
    # Nothing else moved.
    second["node_network_receive_bytes_total"][("eth0",)] = 9876543210
    assert second == first


def test_collectors_of_two_roots_keep_their_own_wrap_state(tmp_path: Path) -> None:
    # psutil's own nowrap state is one per process: the second root's lower
    # counters would be taken as wraps of the first's and get its values added.
    proc = copy_proc(tmp_path)
    dev = proc / "net" / "dev"
    dev.write_text(dev.read_text().replace("eth0: 9876543210", "eth0:       1000"))
    fixture = NetdevCollector(NetworkConfig(), PROC)
    lower = NetdevCollector(NetworkConfig(), str(proc))
    for _ in range(2):
        assert table(fixture.collect(), "device") == expected_nics(NICS)
        got = table(lower.collect(), "device")
        assert got["node_network_receive_bytes_total"][("eth0",)] == 1000


@pytest.mark.parametrize(
    ("line", "name", "receive_bytes", "transmit_packets"),
    [
        ("  eth0: 9876 5 0 0 0 0 0 0 1234 3 0 0 0 0 0 0", "eth0", 9876, 3),
        # Before Linux 2.6.x the name ran into a wide byte count.
        ("  eth1:4294967295 5 0 0 0 0 0 0 1 2 0 0 0 0 0 0", "eth1", 4294967295, 2),
    ],
)
def test_netdev_line_shapes(
    tmp_path: Path, line: str, name: str, receive_bytes: int, transmit_packets: int
) -> None:
    header = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n"
    proc = write_proc(tmp_path, "net/dev", header + line + "\n")
    got = table(NetdevCollector(NetworkConfig(), proc).collect(), "device")
    assert got["node_network_receive_bytes_total"] == {(name,): receive_bytes}
    assert got["node_network_transmit_packets_total"] == {(name,): transmit_packets}


def test_netdev_refuses_a_short_line(tmp_path: Path) -> None:
    proc = write_proc(tmp_path, "net/dev", "h1\nh2\neth0: 1 2 3\n")
    with pytest.raises(ValueError, match=r"not enough values to unpack \(expected 16, got 3\)"):
        NetdevCollector(NetworkConfig(), proc).collect()


@pytest.mark.parametrize(
    ("readings", "expected"),
    [
        # A first reading is taken as it is.
        ([{"a": (5, 7)}], {"a": (5, 7)}),
        # A lower value is a wrap: the last reading is added back, then and after.
        ([{"a": (10, 20)}, {"a": (5, 25)}], {"a": (15, 25)}),
        ([{"a": (10, 20)}, {"a": (5, 25)}, {"a": (7, 30)}], {"a": (17, 30)}),
        # A second wrap adds the second-to-last raw reading on top.
        ([{"a": (10, 0)}, {"a": (5, 0)}, {"a": (7, 0)}, {"a": (3, 0)}], {"a": (20, 0)}),
        # Each device and field on its own.
        ([{"a": (10, 1), "b": (4, 4)}, {"a": (10, 0), "b": (5, 5)}], {"a": (10, 1), "b": (5, 5)}),
        # A device that went away starts again from its raw values when it returns.
        ([{"a": (10,)}, {"a": (5,)}, {}, {"a": (2,)}], {"a": (2,)}),
        # A new device is taken as it is, whatever the others did.
        ([{"a": (10,)}, {"a": (5,), "b": (1,)}], {"a": (15,), "b": (1,)}),
    ],
)
def test_wrap_guard(
    readings: list[dict[str, tuple[int, ...]]], expected: dict[str, tuple[int, ...]]
) -> None:
    guard = WrapGuard()
    for reading in readings:
        got = guard.adjust(reading)
    assert got == expected


# --- filesystem ---------------------------------------------------------------------


def fake_statvfs(
    calls: list[str], figures: dict[str, tuple[int, ...]]
) -> Callable[[str], os.statvfs_result]:
    def statvfs(path: str) -> os.statvfs_result:
        calls.append(path)
        if path not in figures:
            raise OSError(5, "Input/output error", path)
        # bsize, frsize, blocks, bfree, bavail, files, ffree, favail, flag, namemax
        return os.statvfs_result(figures[path])

    return statvfs


FS_FIGURES = {
    "/": (4096, 4096, 25000000, 10000000, 8000000, 6000000, 5000000, 5000000, 0, 255),
    "/boot": (1024, 1024, 500000, 400000, 380000, 128000, 127000, 127000, 1, 255),
    "/srv": (4096, 512, 1000000, 900000, 900000, 65536, 65000, 65000, 0, 255),
    "/mnt/trading data": (4096, 4096, 2000, 1000, 1000, 100, 90, 90, 0, 255),
}


def test_filesystem_mounts_labels_and_figures() -> None:
    calls: list[str] = []
    fs = FilesystemCollector(FilesystemConfig(), PROC, "/", statvfs=fake_statvfs(calls, FS_FIGURES))
    try:
        got = table(fs.collect(), "mountpoint", "device", "fstype")
    finally:
        fs.close()
    root = ("/", "/dev/root", "ext4")  # the kernel's name, as node_exporter reports it
    boot = ("/boot", "/dev/sda2", "ext4")
    srv = ("/srv", "/dev/sdc1", "xfs")  # mounted over /dev/sdb1: only the top one counts
    data = ("/mnt/trading data", "/dev/nvme0n1p1", "xfs")  # \040 in the table
    nfs = ("/mnt/nfs", "nfs.example:/export", "nfs4")  # statvfs fails
    # node_exporter multiplies blocks by f_bsize, not f_frsize (see /srv).
    assert got == {
        "node_filesystem_size_bytes": {
            root: 25000000 * 4096,
            boot: 500000 * 1024,
            srv: 1000000 * 4096,
            data: 2000 * 4096,
        },
        "node_filesystem_free_bytes": {
            root: 10000000 * 4096,
            boot: 400000 * 1024,
            srv: 900000 * 4096,
            data: 1000 * 4096,
        },
        "node_filesystem_avail_bytes": {
            root: 8000000 * 4096,
            boot: 380000 * 1024,
            srv: 900000 * 4096,
            data: 1000 * 4096,
        },
        "node_filesystem_files": {root: 6000000, boot: 128000, srv: 65536, data: 100},
        "node_filesystem_files_free": {root: 5000000, boot: 127000, srv: 65000, data: 90},
        "node_filesystem_readonly": {root: 0, boot: 1, srv: 0, data: 0},
        "node_filesystem_device_error": {root: 0, boot: 0, srv: 0, data: 0, nfs: 1},
    }
    # Left out: proc, sysfs, devtmpfs, tmpfs, cgroup2 and overlay by type, and
    # /run/credentials/... by mount point.
    assert calls == ["/", "/boot", "/srv", "/mnt/trading data", "/mnt/nfs"]


def test_filesystem_under_another_root(tmp_path: Path) -> None:
    # The sidecar's own mount table in a container that mounts the node's / at /host.
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "self" / "mounts").write_text(
        "overlay / overlay rw,relatime,lowerdir=/l,upperdir=/u,workdir=/w 0 0\n"
        "/dev/sda1 /etc/hosts ext4 rw,relatime 0 0\n"
        "/dev/sda1 /host ext4 ro,relatime 0 0\n"
        "proc /host/proc proc rw,relatime 0 0\n"
        "/dev/sda2 /host/boot ext4 rw,relatime 0 0\n"
        "/dev/sdb1 /hostile ext4 rw,relatime 0 0\n"
    )
    calls: list[str] = []
    figures = {
        "/host": (4096, 4096, 100, 50, 40, 10, 5, 5, 1, 255),
        "/host/boot": (1024, 1024, 200, 100, 90, 20, 10, 10, 0, 255),
    }
    fs = FilesystemCollector(
        FilesystemConfig(), str(proc), "/host", statvfs=fake_statvfs(calls, figures)
    )
    try:
        got = table(fs.collect(), "mountpoint", "device")
    finally:
        fs.close()
    # The node's mounts as the node sees them; /etc/hosts and /hostile are the container's.
    assert got["node_filesystem_size_bytes"] == {
        ("/", "/dev/sda1"): 100 * 4096,
        ("/boot", "/dev/sda2"): 200 * 1024,
    }
    assert got["node_filesystem_readonly"] == {("/", "/dev/sda1"): 1, ("/boot", "/dev/sda2"): 0}
    assert calls == ["/host", "/host/boot"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            r"/dev/sdb1 /mnt/a\040b\011c ext4 rw,relatime 0 0",
            Mount("/dev/sdb1", "/mnt/a b\tc", "ext4", "rw,relatime"),
        ),
        (
            r"//srv/share /mnt/back\134slash cifs rw 0 0",
            Mount("//srv/share", "/mnt/back\\slash", "cifs", "rw"),
        ),
        # "none" stays "none", as node_exporter reports it.
        ("none /sys/fs/bpf bpf rw,nosuid 0 0", Mount("none", "/sys/fs/bpf", "bpf", "rw,nosuid")),
    ],
)
def test_parse_mounts_line_shapes(line: str, expected: Mount) -> None:
    assert parse_mounts(line + "\n") == [expected]


def test_parse_mounts_skips_short_lines() -> None:
    assert parse_mounts("\nrootfs /\n/dev/vda / ext4 rw 0 0\n") == [
        Mount("/dev/vda", "/", "ext4", "rw")
    ]


@pytest.mark.parametrize(
    ("mountpoint", "rootfs", "expected"),
    [
        ("/data", "/", "/data"),
        ("/host", "/host", "/"),
        ("/host/boot", "/host", "/boot"),
        ("/host/boot/efi", "/host", "/boot/efi"),
        ("/hostile", "/host", None),
        ("/", "/host", None),
    ],
)
def test_relative_to_root(mountpoint: str, rootfs: str, expected: str | None) -> None:
    assert relative_to_root(mountpoint, rootfs) == expected


# --- hwmon --------------------------------------------------------------------------


def test_hwmon_sensors_and_their_limits() -> None:
    got = table(HwmonCollector(SYS).collect(), "chip", "sensor")
    assert got == {
        "node_hwmon_temp_celsius": {
            # temp1 is not a number: skipped; temp2's crit is garbage: left out.
            ("acpitz", "temp2"): 27.8,
            # Sorted by file name, so temp10 comes before temp2.
            ("coretemp", "Package id 0"): 55.0,
            ("coretemp", "Core 8"): 53.5,
            ("coretemp", "Core 0"): 51.0,
            # Under hwmon3/device/, unlabelled: named after its file.
            ("it8728", "temp3"): -2.0,
            # Two drives of one driver, both "Composite".
            ("nvme", "Composite"): 38.85,
            ("nvme", "Composite_2"): 41.85,
        },
        # A limit only where the chip has the file (psutil copied max into crit).
        "node_hwmon_temp_crit_celsius": {
            ("coretemp", "Package id 0"): 100.0,
            ("coretemp", "Core 8"): 100.0,
            ("coretemp", "Core 0"): 100.0,
            ("nvme", "Composite_2"): 84.85,
        },
        "node_hwmon_temp_max_celsius": {
            ("coretemp", "Package id 0"): 80.0,
            ("coretemp", "Core 8"): 80.0,
            ("coretemp", "Core 0"): 80.0,
            ("nvme", "Composite"): 81.85,
        },
    }


def test_hwmon_falls_back_to_thermal_zones() -> None:
    got = table(HwmonCollector(str(FIXTURES / "sys-thermal")).collect(), "chip", "sensor")
    assert got == {
        "node_hwmon_temp_celsius": {
            ("acpitz", "temp1"): 27.8,
            ("acpitz", "temp2"): 29.8,
            ("x86_pkg_temp", "temp1"): 47.0,
        },
        "node_hwmon_temp_crit_celsius": {("acpitz", "temp1"): 105.0},
        "node_hwmon_temp_max_celsius": {("x86_pkg_temp", "temp1"): 90.0},
    }


def test_no_sensors_no_families(tmp_path: Path) -> None:
    (tmp_path / "class").mkdir()
    assert HwmonCollector(str(tmp_path)).collect() == []


# --- the whole host collector -------------------------------------------------------


def fixture_config(procfs: str = PROC, **overrides: object) -> HostConfig:
    # statvfs reads the machine's real filesystems: the filesystem subsystem has
    # its own fixture tests above, with figures given exactly.
    return HostConfig.model_validate(
        {"procfs": procfs, "sysfs": SYS, "filesystem": {"enabled": False}, **overrides}
    )


class Families:
    def __init__(self, families: Iterable[Metric]) -> None:
        self.families = list(families)

    def collect(self) -> Iterable[Metric]:
        return iter(self.families)


def exposition(families: Iterable[Metric]) -> str:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Families(families))  # type: ignore[arg-type]
    return generate_latest(registry).decode()


def test_end_to_end_output() -> None:
    collector = HostCollector(fixture_config())
    try:
        result = collector.collect()
    finally:
        collector.close()
    assert result.errors == []
    assert collector.subsystems == [
        "cpu",
        "loadavg",
        "meminfo",
        "stat",
        "filefd",
        "diskstats",
        "netdev",
        "hwmon",
    ]
    text = exposition(result.families)
    if os.environ.get("TICKSCOPE_UPDATE_FIXTURES") == "1":
        E2E_OUTPUT.write_text(text)
    assert text == E2E_OUTPUT.read_text()


@pytest.mark.parametrize(
    ("remove", "subsystems", "prefixes"),
    [
        ("net/dev", ["netdev"], ("node_network_",)),
        ("diskstats", ["diskstats"], ("node_disk_",)),
        ("meminfo", ["meminfo"], ("node_memory_",)),
        ("loadavg", ["loadavg"], ("node_load",)),
        ("sys/fs/file-nr", ["filefd"], ("node_filefd_",)),
        # Two subsystems read /proc/stat: both fail, each counted.
        ("stat", ["cpu", "stat"], ("node_cpu_", "node_boot_", "node_context_", "node_intr_")),
    ],
)
def test_a_missing_file_fails_its_subsystems_only(
    tmp_path: Path, remove: str, subsystems: list[str], prefixes: tuple[str, ...]
) -> None:
    proc = copy_proc(tmp_path)
    (proc / remove).unlink()
    collector = HostCollector(fixture_config(str(proc)))
    try:
        result = collector.collect()
    finally:
        collector.close()
    assert result.errors == [
        f"host/{subsystem}: FileNotFoundError: [Errno 2] No such file or directory: "
        f"'{proc / remove}'"
        for subsystem in subsystems
    ]
    # Everything else is exactly what the whole tree gives.
    whole = E2E_OUTPUT.read_text().split("# HELP ")
    kept = "# HELP ".join(part for part in whole if not part.startswith(prefixes))
    assert exposition(result.families) == kept


def test_host_and_engine_collectors_of_different_roots_run_side_by_side() -> None:
    # One lock for every psutil root in the process: the host collector on the
    # fixture tree, another on the real /proc and the engine collector on the
    # fixture tree, each in its own thread as the sidecar runs them, never read
    # each other's root.
    real_boot_time = psutil.boot_time()
    fixture_host = HostCollector(fixture_config())
    real_host = HostCollector(HostConfig.model_validate({"filesystem": {"enabled": False}}))
    engine = EngineProcessCollector(
        EngineConfig.model_validate(
            {"procfs": PROC, "processes": [{"name": "engine", "cmdline": "demo_engine"}]}
        ),
        {},
    )
    expected = E2E_OUTPUT.read_text()
    failures: list[str] = []

    def check_fixture_host() -> None:
        result = fixture_host.collect()
        assert result.errors == [] and exposition(result.families) == expected

    def check_real_host() -> None:
        result = real_host.collect()
        got = table(result.families)
        assert result.errors == [], result.errors
        assert got["node_boot_time_seconds"] == {(): real_boot_time}, got

    def check_engine() -> None:
        result = engine.collect()
        starts = table(result.families)["engine_process_start_time_seconds"]
        assert starts == {(): 1700000000.0 + 987654 / 100}, starts

    def run(check: Callable[[], None]) -> None:
        for _ in range(150):
            try:
                check()
            except AssertionError as exc:  # pragma: no cover - reported below
                failures.append(str(exc))
                return

    workers = [
        threading.Thread(target=run, args=(check,))
        for check in (check_fixture_host, check_real_host, check_engine)
    ]
    try:
        for w in workers:
            w.start()
        for w in workers:
            w.join(60)
    finally:
        fixture_host.close()
        real_host.close()
    assert failures == []
    assert psutil.PROCFS_PATH == "/proc"
