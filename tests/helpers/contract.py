"""The metric contract of ../shared/DESIGN.md (and docs/metrics.md), as data.

Family names are as prometheus_client's parser reports them: counters without
their _total suffix.
"""

from __future__ import annotations

import re
from pathlib import Path

HOST_GAUGES = [
    "node_load1",
    "node_load5",
    "node_load15",
    *(
        f"node_memory_{f}_bytes"
        for f in (
            "MemTotal",
            "MemAvailable",
            "MemFree",
            "Buffers",
            "Cached",
            "SwapTotal",
            "SwapFree",
        )
    ),
    "node_filesystem_size_bytes",
    "node_filesystem_avail_bytes",
    "node_filesystem_free_bytes",
    "node_filefd_allocated",
    "node_filefd_maximum",
    "node_boot_time_seconds",
]
HOST_COUNTERS = [
    "node_cpu_seconds",
    "node_disk_read_bytes",
    "node_disk_written_bytes",
    "node_disk_io_time_seconds",
    *(
        f"node_network_{d}_{what}"
        for d in ("receive", "transmit")
        for what in ("bytes", "errs", "drop")
    ),
    "node_context_switches",
]
HOST_SENSORS = ["node_hwmon_temp_celsius"]  # only where the machine has sensors

ENGINE_GAUGES = [
    "engine_process_up",
    "engine_process_resident_memory_bytes",
    "engine_process_virtual_memory_bytes",
    "engine_process_swap_bytes",
    "engine_process_open_fds",
    "engine_process_max_fds",
    "engine_process_threads",
    "engine_process_start_time_seconds",
    "engine_container_memory_limit_bytes",
    "engine_container_cpu_limit_cores",
]
ENGINE_COUNTERS = [
    "engine_process_cpu_seconds",
    "engine_process_read_bytes",
    "engine_process_written_bytes",
    "engine_process_restarts",
]

SELF_GAUGES = ["tickscope_build_info", "tickscope_collect_duration_seconds"]
SELF_COUNTERS = ["tickscope_collect_errors"]

# The only lint promtool reports on tickscope's exposition: node_exporter's own
# meminfo names are CamelCase (node_memory_MemTotal_bytes), and the contract keeps
# them so that node_exporter dashboards and rules work unchanged.
PROMTOOL_ALLOWED = (
    r"^node_memory_\w+ metric names should be written in 'snake_case' not 'camelCase'$"
)

# Span-derived families (present once spans of the right kind arrived).
SPAN_COUNTERS = ["traces_span_metrics_calls"]
SPAN_HISTOGRAMS = ["traces_span_metrics_duration_seconds"]
TRADING_COUNTERS = [
    "trading_orders",
    "exchange_rate_limit_hits",
    "exchange_api_errors",
    "exchange_timestamp_rejections",
]
TRADING_HISTOGRAMS = ["trading_order_latency_seconds"]
TRADING_GAUGES = ["exchange_rate_limit_used_ratio"]
SPAN_PATH_SELF = [
    "tickscope_receiver_received_spans_total",
    "tickscope_receiver_accepted_spans_total",
    "tickscope_receiver_rejected_spans_total",
    "tickscope_receiver_rejected_requests_total",
    "tickscope_pipeline_queue_spans",
    "tickscope_pipeline_queue_capacity_spans",
    "tickscope_pipeline_dropped_spans_total",
    "tickscope_spanmetrics_series",
    "tickscope_spanmetrics_overflow_total",
    "tickscope_forward_sent_spans_total",
    "tickscope_forward_failed_spans_total",
    "tickscope_forward_dropped_spans_total",
]


# Every series name of the contract as Prometheus stores it: counters with _total,
# histograms as _bucket, _sum and _count.
CONTRACT_SERIES = frozenset(
    [
        *HOST_GAUGES,
        *ENGINE_GAUGES,
        *SELF_GAUGES,
        *TRADING_GAUGES,
        *SPAN_PATH_SELF,
        *(f"{name}_total" for name in HOST_COUNTERS + ENGINE_COUNTERS + SELF_COUNTERS),
        *(f"{name}_total" for name in SPAN_COUNTERS + TRADING_COUNTERS),
        *(
            f"{name}_{suffix}"
            for name in SPAN_HISTOGRAMS + TRADING_HISTOGRAMS
            for suffix in ("bucket", "sum", "count")
        ),
    ]
)

METRICS_DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"


def documented_series() -> set[str]:
    """Series names docs/metrics.md documents (first column of its tables; the
    second for OTLP metrics, whose first column is the OTLP name)."""
    names: set[str] = set()
    for line in METRICS_DOC.read_text().splitlines():
        cells = line.split("|")
        if len(cells) < 4 or not cells[1].strip().startswith("`"):
            continue
        otlp = cells[2].strip().startswith("`")
        column = cells[2] if otlp else cells[1]
        kind = (cells[3] if otlp else cells[2]).strip()
        for name in re.findall(r"`([a-z][a-zA-Z0-9_]*)`", column):
            if kind == "histogram":
                names.update(f"{name}_{suffix}" for suffix in ("bucket", "sum", "count"))
            else:
                names.add(name)
    return names
