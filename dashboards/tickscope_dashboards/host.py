"""Host & engine process: is the machine, and the engine process on it, healthy?

node_exporter's metric names (tickscope's host collector serves them, so the panels work
against a node_exporter too) and the engine-process collector's."""

from __future__ import annotations

from tickscope_dashboards.common import PROCESS, RATE, TARGET, alerts_panel, quantile_queries, rate
from tickscope_dashboards.spec import Dashboard, Panel, Query, Row
from tickscope_dashboards.thresholds import steps, threshold

UID = "tickscope-host"

CPUS = f'count by (job, instance) (node_cpu_seconds_total{{{TARGET}, mode="idle"}})'
NOT_BUSY = 'mode=~"idle|iowait"'
NOT_IDLE = 'mode!="idle"'
CPU_BUSY = (
    "1 - avg by (job, instance) (sum by (job, instance, cpu) "
    f"({rate('node_cpu_seconds_total', TARGET, NOT_BUSY)}))"
)
MEM_AVAILABLE = (
    f"node_memory_MemAvailable_bytes{{{TARGET}}} / node_memory_MemTotal_bytes{{{TARGET}}}"
)
FS_USED = f"1 - node_filesystem_avail_bytes{{{TARGET}}} / node_filesystem_size_bytes{{{TARGET}}}"
ENGINE_CPU = (
    f"sum by (job, instance, process) ({rate('engine_process_cpu_seconds_total', PROCESS)})"
)


def overview() -> Row:
    return Row(
        "Overview",
        (
            Panel(
                title="CPU busy now",
                description="Share of CPU time not idle and not waiting on I/O, averaged over the CPUs. Orange from HostCpuBusy's threshold.",
                unit="percentunit",
                kind="stat",
                width=4,
                height=4,
                queries=(Query(CPU_BUSY, "{{instance}}"),),
                steps=steps("HostCpuBusy"),
                min=0,
                max=1,
            ),
            Panel(
                title="Memory available now",
                description="MemAvailable / MemTotal: what can still be allocated without swapping. Orange below HostMemoryLow's threshold, red below HostMemoryCritical's.",
                unit="percentunit",
                kind="stat",
                width=4,
                height=4,
                queries=(Query(MEM_AVAILABLE, "{{instance}}"),),
                steps=steps("HostMemoryLow", "HostMemoryCritical"),
                min=0,
                max=1,
            ),
            Panel(
                title="Fullest filesystem",
                description="Use of the fullest filesystem (avail vs size, as non-root sees it). Orange from HostFilesystemAlmostFull's threshold, red from HostFilesystemFull's.",
                unit="percentunit",
                kind="stat",
                width=4,
                height=4,
                queries=(Query(f"max by (job, instance) ({FS_USED})", "{{instance}}"),),
                steps=steps("HostFilesystemAlmostFull", "HostFilesystemFull"),
                min=0,
                max=1,
            ),
            Panel(
                title="Engine up",
                description="Whether the sidecar finds the engine process running (engine_process_up).",
                unit="none",
                kind="stat",
                width=4,
                height=4,
                queries=(Query(f"engine_process_up{{{PROCESS}}}", "{{process}}"),),
                value_text=(("0", "DOWN", "red"), ("1", "UP", "green")),
                alerts=("EngineDown",),
            ),
            Panel(
                title="Engine restarts",
                description="Times the engine process came back with a new PID or start time during the dashboard's time range. EngineRestarting fires past 2 in 15 minutes.",
                unit="short",
                kind="stat",
                width=4,
                height=4,
                queries=(
                    Query(
                        f"increase(engine_process_restarts_total{{{PROCESS}}}[$__range])",
                        "{{process}}",
                    ),
                ),
                alerts=("EngineRestarting",),
            ),
            Panel(
                title="Engine uptime",
                description="Time since the engine process started.",
                unit="s",
                kind="stat",
                width=4,
                height=4,
                queries=(
                    Query(
                        f"time() - engine_process_start_time_seconds{{{PROCESS}}}", "{{process}}"
                    ),
                ),
            ),
            alerts_panel(("host", "engine")),
        ),
    )


def cpu() -> Row:
    return Row(
        "CPU and load",
        (
            Panel(
                title="CPU busy",
                description="Share of CPU time not idle and not waiting on I/O, averaged over the CPUs; the line is HostCpuBusy's threshold.",
                unit="percentunit",
                queries=(Query(CPU_BUSY, "{{instance}}"),),
                steps=steps("HostCpuBusy"),
                alerts=("HostCpuBusy",),
                min=0,
                max=1,
            ),
            Panel(
                title="CPU by mode",
                description="CPU time per mode (user, system, iowait, steal, ...) as a share of all CPUs; idle left out.",
                unit="percentunit",
                queries=(
                    Query(
                        f"sum by (job, instance, mode) ({rate('node_cpu_seconds_total', TARGET, NOT_IDLE)}) "
                        f"/ on (job, instance) group_left {CPUS}",
                        "{{instance}} {{mode}}",
                    ),
                ),
                stacked=True,
                min=0,
                max=1,
            ),
            Panel(
                title="Load per CPU",
                description="1, 5 and 15 minute load averages divided by the number of CPUs; the line is HostHighLoad's threshold (on the 5-minute load).",
                unit="short",
                queries=tuple(
                    Query(
                        f"node_load{m}{{{TARGET}}} / on (job, instance) {CPUS}",
                        f"{{{{instance}}}} load{m}",
                    )
                    for m in ("1", "5", "15")
                ),
                steps=steps("HostHighLoad"),
                alerts=("HostHighLoad",),
                min=0,
            ),
            Panel(
                title="Kernel file handles",
                description="Open file handles of the whole kernel against its limit (node_filefd); the line is HostFileDescriptorsHigh's threshold.",
                unit="percentunit",
                queries=(
                    Query(
                        f"node_filefd_allocated{{{TARGET}}} / node_filefd_maximum{{{TARGET}}}",
                        "{{instance}}",
                    ),
                ),
                steps=steps("HostFileDescriptorsHigh"),
                alerts=("HostFileDescriptorsHigh",),
                min=0,
            ),
        ),
    )


def memory() -> Row:
    return Row(
        "Memory",
        (
            Panel(
                title="Memory used and available",
                description="Memory in use (MemTotal - MemAvailable), available, and the total.",
                unit="bytes",
                queries=(
                    Query(
                        f"node_memory_MemTotal_bytes{{{TARGET}}} - node_memory_MemAvailable_bytes{{{TARGET}}}",
                        "{{instance}} used",
                    ),
                    Query(f"node_memory_MemAvailable_bytes{{{TARGET}}}", "{{instance}} available"),
                    Query(f"node_memory_MemTotal_bytes{{{TARGET}}}", "{{instance}} total"),
                ),
                min=0,
            ),
            Panel(
                title="Memory available",
                description="MemAvailable as a share of MemTotal; the lines are HostMemoryLow's and HostMemoryCritical's thresholds.",
                unit="percentunit",
                queries=(Query(MEM_AVAILABLE, "{{instance}}"),),
                steps=steps("HostMemoryLow", "HostMemoryCritical"),
                alerts=("HostMemoryLow", "HostMemoryCritical"),
                min=0,
                max=1,
            ),
            Panel(
                title="Swap used",
                description="Swap in use and the swap size (both 0 where the machine has no swap, as most Kubernetes nodes); HostSwapUsage fires past half of it.",
                unit="bytes",
                queries=(
                    Query(
                        f"node_memory_SwapTotal_bytes{{{TARGET}}} - node_memory_SwapFree_bytes{{{TARGET}}}",
                        "{{instance}} used",
                    ),
                    Query(f"node_memory_SwapTotal_bytes{{{TARGET}}}", "{{instance}} total"),
                ),
                alerts=("HostSwapUsage",),
                min=0,
            ),
        ),
    )


def disks() -> Row:
    return Row(
        "Filesystems and disks",
        (
            Panel(
                title="Filesystem use per mount",
                description="Share of each filesystem used, as a non-root process sees it (1 - avail / size); the lines are HostFilesystemAlmostFull's and HostFilesystemFull's thresholds.",
                unit="percentunit",
                queries=(Query(FS_USED, "{{instance}} {{mountpoint}}"),),
                steps=steps("HostFilesystemAlmostFull", "HostFilesystemFull"),
                alerts=("HostFilesystemAlmostFull", "HostFilesystemFull"),
                min=0,
                max=1,
            ),
            Panel(
                title="Filesystem space available",
                description="Bytes available to non-root per mount; HostFilesystemFillingUp fires when the last hour's trend reaches 0 within 4 hours.",
                unit="bytes",
                queries=(
                    Query(
                        f"node_filesystem_avail_bytes{{{TARGET}}}", "{{instance}} {{mountpoint}}"
                    ),
                ),
                alerts=("HostFilesystemFillingUp",),
                min=0,
            ),
            Panel(
                title="Disk I/O",
                description="Bytes read and written per second per disk.",
                unit="Bps",
                queries=(
                    Query(
                        f"sum by (job, instance, device) ({rate('node_disk_read_bytes_total', TARGET)})",
                        "{{instance}} {{device}} read",
                    ),
                    Query(
                        f"sum by (job, instance, device) ({rate('node_disk_written_bytes_total', TARGET)})",
                        "{{instance}} {{device}} written",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Disk utilisation",
                description="Share of time each disk was busy with I/O (rate of node_disk_io_time_seconds_total); near 100% the engine's writes queue.",
                unit="percentunit",
                queries=(
                    Query(
                        rate("node_disk_io_time_seconds_total", TARGET), "{{instance}} {{device}}"
                    ),
                ),
                min=0,
            ),
        ),
    )


def network() -> Row:
    return Row(
        "Network and sensors",
        (
            Panel(
                title="Network traffic",
                description="Bytes received and sent per second per interface (lo and veth* left out by the collector).",
                unit="Bps",
                queries=(
                    Query(
                        rate("node_network_receive_bytes_total", TARGET),
                        "{{instance}} {{device}} in",
                    ),
                    Query(
                        rate("node_network_transmit_bytes_total", TARGET),
                        "{{instance}} {{device}} out",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Network errors and drops",
                description="Packets per second the interfaces failed on or dropped, each direction; 0 on a healthy link.",
                unit="pps",
                queries=(
                    Query(
                        rate("node_network_receive_errs_total", TARGET),
                        "{{instance}} {{device}} receive errors",
                    ),
                    Query(
                        rate("node_network_transmit_errs_total", TARGET),
                        "{{instance}} {{device}} transmit errors",
                    ),
                    Query(
                        rate("node_network_receive_drop_total", TARGET),
                        "{{instance}} {{device}} receive drops",
                    ),
                    Query(
                        rate("node_network_transmit_drop_total", TARGET),
                        "{{instance}} {{device}} transmit drops",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Temperatures",
                description="hwmon temperature sensors per chip and sensor. Empty on machines without sensors (most VMs and containers).",
                unit="celsius",
                queries=(
                    Query(
                        f"node_hwmon_temp_celsius{{{TARGET}}}", "{{instance}} {{chip}} {{sensor}}"
                    ),
                ),
                healthy_empty="sensors",
            ),
        ),
    )


def engine() -> Row:
    oom = threshold("EngineOOMImminent")
    return Row(
        "Engine process",
        (
            Panel(
                title="Engine memory against its limit",
                description=f"Resident memory (RSS) of the engine process, its container's memory limit (from the downward API; absent outside Kubernetes) and EngineOOMImminent's line at {oom.value:.0%} of it.",
                unit="bytes",
                queries=(
                    Query(f"engine_process_resident_memory_bytes{{{PROCESS}}}", "{{process}} RSS"),
                    Query(f"engine_container_memory_limit_bytes{{{PROCESS}}}", "{{process}} limit"),
                    Query(
                        f"engine_container_memory_limit_bytes{{{PROCESS}}} * {oom.value}",
                        f"{{{{process}}}} {oom.alert} ({oom.value:.0%})",
                    ),
                ),
                alerts=("EngineOOMImminent", "EngineMemoryLeakSuspected"),
                min=0,
            ),
            Panel(
                title="Engine CPU against its limit",
                description="CPU the engine process uses, in cores (user + system), and its container's CPU limit in cores (absent outside Kubernetes).",
                unit="short",
                queries=(
                    Query(ENGINE_CPU, "{{process}} cores used"),
                    Query(f"engine_container_cpu_limit_cores{{{PROCESS}}}", "{{process}} limit"),
                ),
                min=0,
            ),
            Panel(
                title="Engine threads",
                description="Threads of the engine process; the line is EngineTooManyThreads's threshold.",
                unit="short",
                queries=(Query(f"engine_process_threads{{{PROCESS}}}", "{{process}}"),),
                steps=steps("EngineTooManyThreads"),
                alerts=("EngineTooManyThreads",),
                min=0,
            ),
            Panel(
                title="Engine file descriptors used",
                description="Open file descriptors of the engine as a share of its soft limit; the line is EngineFileDescriptorsHigh's threshold.",
                unit="percentunit",
                queries=(
                    Query(
                        f"engine_process_open_fds{{{PROCESS}}} / engine_process_max_fds{{{PROCESS}}}",
                        "{{process}}",
                    ),
                ),
                steps=steps("EngineFileDescriptorsHigh"),
                alerts=("EngineFileDescriptorsHigh",),
                min=0,
            ),
            Panel(
                title="Engine storage I/O",
                description="Bytes per second the engine process reads from and writes to storage (/proc/PID/io).",
                unit="Bps",
                queries=(
                    Query(rate("engine_process_read_bytes_total", PROCESS), "{{process}} read"),
                    Query(
                        rate("engine_process_written_bytes_total", PROCESS), "{{process}} written"
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Engine loop heartbeat age",
                description="Seconds since each engine loop last called shim.heartbeat (the value arrives with the engine's metrics every 10 s, so up to ~10 s is normal); the line is EngineLoopStalled's threshold. Empty unless the engine beats.",
                unit="s",
                queries=(
                    Query(
                        f"time() - max by (job, instance, loop) (engine_loop_heartbeat_timestamp_seconds{{{TARGET}}})",
                        "{{instance}} {{loop}}",
                    ),
                ),
                steps=steps("EngineLoopStalled"),
                alerts=("EngineLoopStalled",),
                min=0,
            ),
            Panel(
                title="Engine loop iteration duration",
                description="Time between heartbeats of each engine loop (or the body's duration with shim.loop), p50 and p99: a slow loop reacts late to the market.",
                unit="s",
                queries=quantile_queries(
                    "engine_loop_iteration_duration_seconds",
                    TARGET,
                    "job, instance, loop",
                    "{{instance}} {{loop}}",
                    (0.5, 0.99),
                ),
                min=0,
            ),
            Panel(
                title="Engine up over time",
                description="1 while the engine process runs, 0 while the sidecar cannot find it; EngineDown fires after a minute at 0.",
                unit="none",
                queries=(Query(f"engine_process_up{{{PROCESS}}}", "{{process}}"),),
                alerts=("EngineDown",),
                min=0,
                max=1,
            ),
        ),
    )


DASHBOARD = Dashboard(
    uid=UID,
    title="tickscope / Host & engine process",
    description="The machine and the engine process on it: CPU, memory, disks, network, the engine's memory and CPU against its container limits.",
    variables=("datasource", "job", "instance", "process"),
    rows=(overview(), cpu(), memory(), disks(), network(), engine()),
    alert_components=("host", "engine"),
)

__all__ = ["DASHBOARD", "RATE", "UID"]
