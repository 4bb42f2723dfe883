"""tickscope sidecar: is the sidecar itself keeping up, and is anything it counts lost?"""

from __future__ import annotations

from tickscope_dashboards.common import TARGET, alerts_panel, quantile_queries, rate
from tickscope_dashboards.spec import Dashboard, Panel, Query, Row

UID = "tickscope-sidecar"


def by(labels: str, metric: str) -> str:
    return f"sum by (job, instance, {labels}) ({rate(metric, TARGET)})"


def total(metric: str) -> str:
    return f"sum by (job, instance) ({rate(metric, TARGET)})"


def overview() -> Row:
    def stat(title: str, description: str, unit: str, expr: str) -> Panel:
        return Panel(
            title=title, description=description, unit=unit, kind="stat", width=4, height=4,
            queries=(Query(expr, "{{instance}}"),),
        )  # fmt: skip

    return Row(
        "Overview",
        (
            Panel(
                title="Build",
                description="tickscope's version and Python per sidecar (tickscope_build_info).",
                unit="none",
                kind="table",
                width=8,
                height=4,
                queries=(Query(f"tickscope_build_info{{{TARGET}}}", instant=True),),
                hidden_columns=("Time", "Value", "__name__"),
                alerts=("TickscopeMetricsAbsent",),
            ),
            stat(
                "Spans accepted per second",
                "Spans taken into the pipeline per second, both receivers.",
                "cps",
                total("tickscope_receiver_accepted_spans_total"),
            ),
            stat(
                "Span queue fill",
                "Spans waiting in the pipeline's queue as a share of its capacity; at 100% receivers answer 429/RESOURCE_EXHAUSTED.",
                "percentunit",
                f"tickscope_pipeline_queue_spans{{{TARGET}}} / tickscope_pipeline_queue_capacity_spans{{{TARGET}}}",
            ),
            stat(
                "Span-metric series used",
                "Span-metric label sets held as a share of spanmetrics.max_series; past it new label sets go to the overflow series.",
                "percentunit",
                f"tickscope_spanmetrics_series{{{TARGET}}} / tickscope_spanmetrics_series_limit{{{TARGET}}}",
            ),
            Panel(
                title="Scrape up",
                description="Whether Prometheus's last scrape of the sidecar succeeded (up); TickscopeDown fires after a minute at 0, TickscopeMetricsAbsent when no sidecar is scraped at all.",
                unit="none",
                kind="stat",
                width=4,
                height=4,
                queries=(Query(f"up{{{TARGET}}}", "{{instance}}"),),
                value_text=(("0", "DOWN", "red"), ("1", "UP", "green")),
                alerts=("TickscopeDown",),
            ),
            alerts_panel(("sidecar",)),
        ),
    )


def spans() -> Row:
    return Row(
        "Spans in",
        (
            Panel(
                title="Spans received, accepted, rejected",
                description="Spans per second in decodable export requests, taken into the pipeline, and refused (by reason), per receiver.",
                unit="cps",
                queries=(
                    Query(
                        by("receiver", "tickscope_receiver_received_spans_total"),
                        "{{instance}} {{receiver}} received",
                    ),
                    Query(
                        by("receiver", "tickscope_receiver_accepted_spans_total"),
                        "{{instance}} {{receiver}} accepted",
                    ),
                    Query(
                        by("receiver, reason", "tickscope_receiver_rejected_spans_total"),
                        "{{instance}} {{receiver}} rejected: {{reason}}",
                    ),
                ),
                alerts=("TickscopeRejectingSpans",),
                min=0,
            ),
            Panel(
                title="Rejected requests by reason",
                description="Whole export requests turned away per second: malformed, too_large, unsupported_media_type, queue_full, read_timeout, ...",
                unit="reqps",
                queries=(
                    Query(
                        by("receiver, reason", "tickscope_receiver_rejected_requests_total"),
                        "{{instance}} {{receiver}} {{reason}}",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Spans lost after acceptance",
                description="Accepted spans dropped (reason shutdown) and batches a consumer failed on (span_metrics, forward): the metrics undercount by these.",
                unit="cps",
                queries=(
                    Query(
                        by("reason", "tickscope_pipeline_dropped_spans_total"),
                        "{{instance}} dropped: {{reason}}",
                    ),
                    Query(
                        by("consumer", "tickscope_pipeline_consumer_errors_total"),
                        "{{instance}} {{consumer}} failed batches",
                    ),
                ),
                alerts=("TickscopeDroppingSpans",),
                min=0,
            ),
            Panel(
                title="Export request duration",
                description="Time to handle an OTLP export request, p50 and p99 per receiver.",
                unit="s",
                queries=quantile_queries(
                    "tickscope_receiver_request_duration_seconds",
                    TARGET,
                    "job, instance, receiver",
                    "{{instance}} {{receiver}}",
                    (0.5, 0.99),
                ),
                min=0,
            ),
            Panel(
                title="Span queue against capacity",
                description="Spans waiting between the receivers and the consumers, and the queue's bound (limits.queue_capacity_spans).",
                unit="short",
                queries=(
                    Query(f"tickscope_pipeline_queue_spans{{{TARGET}}}", "{{instance}} queued"),
                    Query(
                        f"tickscope_pipeline_queue_capacity_spans{{{TARGET}}}",
                        "{{instance}} capacity",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Spans processed",
                description="Spans the consumers aggregated per second (span and trading metrics).",
                unit="cps",
                queries=(Query(total("tickscope_pipeline_processed_spans_total"), "{{instance}}"),),
                min=0,
            ),
        ),
    )


def span_metrics() -> Row:
    return Row(
        "Span and trading metrics",
        (
            Panel(
                title="Span-metric series against the limit",
                description="Label sets the span metrics hold, and spanmetrics.max_series.",
                unit="short",
                queries=(
                    Query(f"tickscope_spanmetrics_series{{{TARGET}}}", "{{instance}} series"),
                    Query(f"tickscope_spanmetrics_series_limit{{{TARGET}}}", "{{instance}} limit"),
                ),
                min=0,
            ),
            Panel(
                title="Overflow and expired series",
                description="Spans counted in an otel_metric_overflow series per second (span metrics, and each trading metric), and label sets dropped by expiry.",
                unit="cps",
                queries=(
                    Query(
                        total("tickscope_spanmetrics_overflow_total"),
                        "{{instance}} span metrics overflow",
                    ),
                    Query(
                        by("metric", "tickscope_trading_overflow_total"),
                        "{{instance}} {{metric}} overflow",
                    ),
                    Query(
                        total("tickscope_spanmetrics_expired_series_total"),
                        "{{instance}} expired series",
                    ),
                ),
                alerts=("TickscopeSpanMetricsOverflow",),
                min=0,
            ),
            Panel(
                title="Truncated spans",
                description="Spans counted with a label value cut to max_label_value_length, or with attributes past max_attributes_per_span unread.",
                unit="cps",
                queries=(
                    Query(
                        by("reason", "tickscope_spanmetrics_truncated_spans_total"),
                        "{{instance}} span metrics {{reason}}",
                    ),
                    Query(
                        by("reason", "tickscope_trading_truncated_spans_total"),
                        "{{instance}} trading {{reason}}",
                    ),
                ),
                min=0,
            ),
        ),
    )


def otlp_metrics() -> Row:
    return Row(
        "OTLP metrics",
        (
            Panel(
                title="Metric points received, accepted, rejected",
                description="OTLP metric data points per second received and translated, per receiver, and refused by reason (type_conflict, invalid_value, cardinality_limit, ...). Rejections are empty on a healthy system.",
                unit="cps",
                queries=(
                    Query(
                        by("receiver", "tickscope_receiver_received_points_total"),
                        "{{instance}} {{receiver}} received",
                    ),
                    Query(
                        by("receiver", "tickscope_receiver_accepted_points_total"),
                        "{{instance}} {{receiver}} accepted",
                    ),
                    Query(
                        by("receiver, reason", "tickscope_receiver_rejected_points_total"),
                        "{{instance}} {{receiver}} rejected: {{reason}}",
                    ),
                ),
                healthy_empty="bad_otlp",
                min=0,
            ),
            Panel(
                title="Translated metric series",
                description="Series translated from the engine's OTLP metrics, and those dropped per second by staleness (metrics.stale_after).",
                unit="short",
                queries=(
                    Query(f"tickscope_metrics_series{{{TARGET}}}", "{{instance}} series"),
                    Query(
                        total("tickscope_metrics_expired_series_total"),
                        "{{instance}} expired per second",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Metric points folded into overflow",
                description="Points per second folded into an otel_metric_overflow series because the metric passed metrics.max_series_per_metric. Empty on a healthy system.",
                unit="cps",
                queries=(
                    Query(
                        by("metric", "tickscope_metrics_overflow_points_total"),
                        "{{instance}} {{metric}}",
                    ),
                ),
                healthy_empty="overflow",
                min=0,
            ),
        ),
    )


def forwarder() -> Row:
    return Row(
        "Forwarding upstream",
        (
            Panel(
                title="Forwarded spans",
                description="Spans per second the upstream accepted, refused for good (or whose retries ran out), and dropped by reason (buffer_full, shutdown, ...). Empty unless `forward` is configured.",
                unit="cps",
                queries=(
                    Query(total("tickscope_forward_sent_spans_total"), "{{instance}} sent"),
                    Query(total("tickscope_forward_failed_spans_total"), "{{instance}} failed"),
                    Query(
                        by("reason", "tickscope_forward_dropped_spans_total"),
                        "{{instance}} dropped: {{reason}}",
                    ),
                ),
                alerts=("TickscopeForwarderFailing",),
                min=0,
            ),
            Panel(
                title="Forward buffer",
                description="Spans waiting for the upstream, and the buffer's bound (forward.buffer); a full buffer drops spans. Empty unless `forward` is configured.",
                unit="short",
                queries=(
                    Query(f"tickscope_forward_buffer_spans{{{TARGET}}}", "{{instance}} buffered"),
                    Query(
                        f"tickscope_forward_buffer_capacity_spans{{{TARGET}}}",
                        "{{instance}} capacity",
                    ),
                ),
                min=0,
            ),
        ),
    )


def collectors() -> Row:
    return Row(
        "Collectors and the sidecar process",
        (
            Panel(
                title="Collection duration",
                description="How long each collector's last collection took (host, engine_process).",
                unit="s",
                queries=(
                    Query(
                        f"tickscope_collect_duration_seconds{{{TARGET}}}",
                        "{{instance}} {{collector}}",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Collection errors",
                description="Failed, timed-out or partly failed collections per second, per collector (e.g. /proc files the sidecar may not read).",
                unit="ops",
                queries=(
                    Query(
                        by("collector", "tickscope_collect_errors_total"),
                        "{{instance}} {{collector}}",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Time since last collection",
                description="Seconds since each collector last finished; far above host.interval, the collector is stuck.",
                unit="s",
                queries=(
                    Query(
                        f"time() - tickscope_collect_last_success_timestamp_seconds{{{TARGET}}}",
                        "{{instance}} {{collector}}",
                    ),
                ),
                min=0,
            ),
            Panel(
                title="Sidecar CPU",
                description="CPU the sidecar process uses, in cores (prometheus_client's process_cpu_seconds_total).",
                unit="short",
                queries=(Query(rate("process_cpu_seconds_total", TARGET), "{{instance}}"),),
                min=0,
            ),
            Panel(
                title="Sidecar memory",
                description="Resident memory of the sidecar process.",
                unit="bytes",
                queries=(Query(f"process_resident_memory_bytes{{{TARGET}}}", "{{instance}}"),),
                min=0,
            ),
            Panel(
                title="Admin port rejections",
                description="Requests the admin port (/metrics, probes) refused or cut per second, by reason (unauthorized, rate_limited, render_budget, ...).",
                unit="reqps",
                queries=(
                    Query(
                        by("reason", "tickscope_admin_rejected_requests_total"),
                        "{{instance}} {{reason}}",
                    ),
                ),
                min=0,
            ),
        ),
    )


DASHBOARD = Dashboard(
    uid=UID,
    title="tickscope / Sidecar",
    description="tickscope itself: spans and metric points in, rejected and lost, its queue and series limits, forwarding, collectors, CPU and memory.",
    variables=("datasource", "job", "instance"),
    rows=(overview(), spans(), span_metrics(), otlp_metrics(), forwarder(), collectors()),
    alert_components=("sidecar",),
)
