"""engine_process_* for each watched process, and its container's limits.

A process is identified by (PID, start time), so a PID the kernel hands to a new
process is never mistaken for the old one. When the watched process goes away,
only engine_process_up 0 and the restart counter remain: no value of the dead
process is served. When a process matching the same description appears with a
different identity, that is a restart.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psutil
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from tickscope.collectors.base import CollectResult
from tickscope.collectors.engine.config import EngineConfig, EngineProcessConfig
from tickscope.collectors.engine.finder import PidFileError, find_process
from tickscope.collectors.engine.procfs import read_max_fds, read_swap_bytes
from tickscope.collectors.engine.quantity import parse_quantity
from tickscope.collectors.procfs_root import psutil_procfs

__all__ = ["ContainerLimits", "EngineProcessCollector", "limits_from_env"]

log = logging.getLogger("tickscope.collector.engine")

_LINUX = sys.platform.startswith("linux")


@dataclass(frozen=True, slots=True)
class ContainerLimits:
    memory_bytes: float | None = None
    cpu_cores: float | None = None


def limits_from_env(config: EngineProcessConfig, environ: Mapping[str, str]) -> ContainerLimits:
    """Read the container limits the downward API put in the environment.

    Raises ValueError naming the variable when a value is not a quantity: the
    deployment is wrong, and the sidecar should say so at startup.
    """

    def read(var: str, scale: float) -> float | None:
        raw = environ.get(var, "").strip()
        if not raw:
            return None
        try:
            value = parse_quantity(raw) * scale
        except ValueError as exc:
            raise ValueError(f"engine process {config.name!r}: env {var}: {exc}") from None
        # 0 would turn "RSS / limit" into +Inf and fire every alert: treat it as unknown.
        return value if value > 0 else None

    return ContainerLimits(
        memory_bytes=read(config.memory_limit_env, 1.0),
        cpu_cores=read(config.cpu_limit_env, parse_quantity(config.cpu_limit_divisor)),
    )


@dataclass(slots=True)
class _Watched:
    config: EngineProcessConfig
    limits: ContainerLimits
    proc: psutil.Process | None = None
    identity: tuple[int, float] | None = None  # (pid, create_time) of the last one seen
    restarts: int = 0
    up: bool = False
    # Why the process was last found down, when the finder could say (a pid file
    # that is not a regular file, or holds no PID); shown in readiness (status.py's
    # EngineProcessStatus has no field for it yet).
    reason: str | None = None
    # Which optional reads were denied, so the warning is logged once, not per interval.
    denied: set[str] = field(default_factory=set)


class EngineProcessCollector:
    name = "engine_process"

    def __init__(self, config: EngineConfig, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        self.interval = config.interval
        self._procfs = config.procfs
        self._watched = [_Watched(p, limits_from_env(p, env)) for p in config.processes]

    def collect(self) -> CollectResult:
        # The whole collection, not each call: the Processes the finder makes keep
        # the root they were made under, and create_time() reads boot_time() then.
        with psutil_procfs(self._procfs):
            return self._collect()

    def _collect(self) -> CollectResult:
        f = _Families()
        errors: list[str] = []
        for w in self._watched:
            name = w.config.name
            w.reason = None
            try:
                self._locate(w)
            except PidFileError as exc:
                # Counted in tickscope_collect_errors_total{collector="engine_process"}
                # (one per collection it lasts); the process is reported down.
                errors.append(f"engine process {name!r}: {exc}")
                w.reason = str(exc)
                w.proc = None
            w.up = False
            if w.proc is not None:
                try:
                    w.up = self._read(w, f, errors)
                except psutil.NoSuchProcess:
                    w.proc = None  # it exited between the check and the reads
                except psutil.Error as exc:
                    errors.append(f"engine process {name!r}: {type(exc).__name__}: {exc}")
            f.up.add_metric([name], 1 if w.up else 0)
            f.restarts.add_metric([name], w.restarts)
            if w.limits.memory_bytes is not None:
                f.mem_limit.add_metric([name], w.limits.memory_bytes)
            if w.limits.cpu_cores is not None:
                f.cpu_limit.add_metric([name], w.limits.cpu_cores)
        return CollectResult(f.all(), errors)

    def _locate(self, w: _Watched) -> None:
        # A pid file is re-read every time: it is the engine's own statement of
        # which PID it is, and it may change while the old PID is still alive.
        if w.proc is not None and w.config.pid_file is None:
            try:
                if w.proc.is_running() and w.proc.status() != psutil.STATUS_ZOMBIE:
                    return
            except psutil.Error:
                pass
        was_up = w.proc is not None
        proc = find_process(w.config, self._procfs)
        w.proc = proc
        if proc is None:
            if was_up:
                log.warning("engine process is gone", extra={"engine_process": w.config.name})
            return
        try:
            identity = (proc.pid, proc.create_time())
        except psutil.Error:
            w.proc = None
            return
        if identity != w.identity:
            if w.identity is not None:
                w.restarts += 1
                log.info(
                    "engine process restarted",
                    extra={
                        "engine_process": w.config.name,
                        "pid": proc.pid,
                        "old_pid": w.identity[0],
                    },
                )
            else:
                log.info(
                    "engine process found", extra={"engine_process": w.config.name, "pid": proc.pid}
                )
            w.identity = identity

    def _read(self, w: _Watched, f: _Families, errors: list[str]) -> bool:
        proc = w.proc
        assert proc is not None
        name = w.config.name
        with proc.oneshot():
            cpu = proc.cpu_times()
            mem = proc.memory_info()
            threads = proc.num_threads()
            started = proc.create_time()
            fds = self._optional(w, "open_fds", proc.num_fds, errors)
            # psutil defines io_counters only where the kernel keeps per-task I/O
            # accounting (CONFIG_TASK_IO_ACCOUNTING); without it there is no figure.
            read_io = getattr(proc, "io_counters", None)
            io = None if read_io is None else self._optional(w, "io", read_io, errors)
        swap = max_fds = None
        if _LINUX:
            procfs = self._procfs
            swap = self._optional(w, "swap", lambda: read_swap_bytes(proc.pid, procfs), errors)
            max_fds = self._optional(w, "max_fds", lambda: read_max_fds(proc.pid, procfs), errors)
        # Only now is everything read: a process that vanished half-way raised
        # NoSuchProcess above and contributes no values at all.
        label = [name]
        f.cpu.add_metric([name, "user"], cpu.user)
        f.cpu.add_metric([name, "system"], cpu.system)
        f.rss.add_metric(label, mem.rss)
        f.vms.add_metric(label, mem.vms)
        f.threads.add_metric(label, threads)
        f.start_time.add_metric(label, started)
        if fds is not None:
            f.open_fds.add_metric(label, fds)
        if io is not None:
            f.read_bytes.add_metric(label, io.read_bytes)
            f.written_bytes.add_metric(label, io.write_bytes)
        if swap is not None:
            f.swap.add_metric(label, swap)
        if max_fds is not None:
            f.max_fds.add_metric(label, max_fds)
        return True

    @staticmethod
    def _optional(w: _Watched, what: str, read: Any, errors: list[str]) -> Any:
        """A read the sidecar may lack the rights for (another user's /proc/PID/io):
        reported and left out, while the rest of the process's figures still count."""
        try:
            return read()
        except psutil.AccessDenied:
            message = f"engine process {w.config.name!r}: access denied reading {what}"
        except FileNotFoundError:
            raise psutil.NoSuchProcess(w.proc.pid if w.proc else 0) from None
        except (PermissionError, psutil.ZombieProcess):
            message = f"engine process {w.config.name!r}: access denied reading {what}"
        errors.append(message)
        if what not in w.denied:
            w.denied.add(what)
            log.warning(
                "cannot read a process figure; run the sidecar as the engine's user",
                extra={"engine_process": w.config.name, "figure": what},
            )
        return None

    def readiness(self) -> Mapping[str, str | None]:
        return {
            f"engine:{w.config.name}": (
                None
                if w.up
                else f"engine process {w.config.name!r} ({w.config.describe_match()}) not running"
                + (f": {w.reason}" if w.reason else "")
            )
            for w in self._watched
            if w.config.required
        }

    def status(self) -> dict[str, Any]:
        return {
            "processes": [
                {
                    "name": w.config.name,
                    "up": w.up,
                    "pid": w.identity[0] if w.up and w.identity else None,
                    "restarts": w.restarts,
                    "required": w.config.required,
                    "match": w.config.describe_match(),
                    "reason": w.reason,
                }
                for w in self._watched
            ]
        }

    def close(self) -> None:
        pass


class _Families:
    def __init__(self) -> None:
        def gauge(stem: str, doc: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"engine_process_{stem}", doc, labels=["process"])

        def counter(
            stem: str, doc: str, labels: tuple[str, ...] = ("process",)
        ) -> CounterMetricFamily:
            return CounterMetricFamily(f"engine_process_{stem}", doc, labels=list(labels))

        self.up = gauge("up", "1 if the watched engine process is running, else 0.")
        self.cpu = counter(
            "cpu_seconds", "CPU time the engine process used, by mode.", ("process", "mode")
        )
        self.rss = gauge("resident_memory_bytes", "Resident set size of the engine process.")
        self.vms = gauge("virtual_memory_bytes", "Virtual memory size of the engine process.")
        self.swap = gauge("swap_bytes", "Swapped-out memory of the engine process.")
        self.open_fds = gauge("open_fds", "Open file descriptors of the engine process.")
        self.max_fds = gauge(
            "max_fds", "Soft limit on open file descriptors of the engine process."
        )
        self.threads = gauge("threads", "Threads in the engine process.")
        self.start_time = gauge(
            "start_time_seconds", "Start time of the engine process since the epoch, in seconds."
        )
        self.read_bytes = counter("read_bytes", "Bytes the engine process read from storage.")
        self.written_bytes = counter("written_bytes", "Bytes the engine process wrote to storage.")
        self.restarts = counter(
            "restarts", "Times the watched process was found again with a new PID or start time."
        )
        self.mem_limit = GaugeMetricFamily(
            "engine_container_memory_limit_bytes",
            "Memory limit of the engine's container (Kubernetes downward API).",
            labels=["process"],
        )
        self.cpu_limit = GaugeMetricFamily(
            "engine_container_cpu_limit_cores",
            "CPU limit of the engine's container in cores (Kubernetes downward API).",
            labels=["process"],
        )

    def all(self) -> list[Metric]:
        families: list[Metric] = [
            self.up,
            self.cpu,
            self.rss,
            self.vms,
            self.swap,
            self.open_fds,
            self.max_fds,
            self.threads,
            self.start_time,
            self.read_bytes,
            self.written_bytes,
            self.restarts,
            self.mem_limit,
            self.cpu_limit,
        ]
        # A family with no samples would still print its HELP and TYPE; leave it out.
        return [fam for fam in families if fam.samples]
