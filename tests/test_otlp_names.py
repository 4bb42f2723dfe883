"""OTLP -> Prometheus names: the cases from the OpenTelemetry specification's
compatibility rules, as prometheus/otlptranslator's and the Collector's tests write them."""

from __future__ import annotations

import pytest

from tickscope.exporters.otlpmetrics.names import label_name, metric_name


@pytest.mark.parametrize(
    ("name", "unit", "kind", "expected"),
    [
        ("requests", "", "counter", "requests_total"),
        ("cpu_usage", "1", "gauge", "cpu_usage_ratio"),
        ("items", "1", "counter", "items_total"),
        ("response_time", "ms", "gauge", "response_time_milliseconds"),
        ("requests", "1/s", "gauge", "requests_per_second"),
        ("throughput", "By/s", "gauge", "throughput_bytes_per_second"),
        ("custom_metric", "custom_unit", "gauge", "custom_metric_custom_unit"),
        ("custom_metric", "{custom}", "gauge", "custom_metric"),
        ("custom_metric", "By/{custom}", "gauge", "custom_metric_bytes"),
        ("requests_total", "", "counter", "requests_total"),
        ("cpu_usage_ratio", "1", "gauge", "cpu_usage_ratio"),
        ("response_time_seconds", "s", "gauge", "response_time_seconds"),
        (
            "metric__with__multiple__underscores",
            "unit__multiple__underscores",
            "gauge",
            "metric_with_multiple_underscores_unit_multiple_underscores",
        ),
        (
            "custom_metric",
            "unit@with#special/chars",
            "gauge",
            "custom_metric_unit_with_special_per_chars",
        ),
        ("metric", " By / s ", "gauge", "metric_bytes_per_second"),
        ("metric", "By/", "gauge", "metric_bytes"),
        ("metric", "/", "gauge", "metric"),
        ("123metric", "", "gauge", "_123metric"),
        ("@#$%", "", "gauge", ""),
        ("http.request.duration", "ms", "histogram", "http_request_duration_milliseconds"),
        ("network_transmitted_bytes_total", "By", "counter", "network_transmitted_bytes_total"),
        ("system.network.dropped", "{packets}", "counter", "system_network_dropped_total"),
        ("system.network.packets.dropped", "packets", "gauge", "system_network_packets_dropped"),
        ("hw.fan.speed_ratio", "1", "gauge", "hw_fan_speed_ratio"),
        ("broken.metric.success_ratio", "%", "gauge", "broken_metric_success_ratio_percent"),
        ("broken.metric.speed", "km/h", "gauge", "broken_metric_speed_km_per_hour"),
        (
            "mongodbatlas.process.db.query_targeting.scanned_per_returned",
            "{scanned}/{returned}",
            "gauge",
            "mongodbatlas_process_db_query_targeting_scanned_per_returned",
        ),
        ("system.disk.operation_time", "s", "counter", "system_disk_operation_time_seconds_total"),
        ("3.14 digits", "", "gauge", "_3_14_digits"),
        # The shim's own instruments:
        ("engine.cache.lookups", "{lookup}", "counter", "engine_cache_lookups_total"),
        ("engine.queue.depth", "{item}", "gauge", "engine_queue_depth"),
        ("cpython.gc.pause_time", "s", "counter", "cpython_gc_pause_time_seconds_total"),
        ("process.memory.usage", "By", "gauge", "process_memory_usage_bytes"),
        ("requests_per_second", "1/s", "gauge", "requests_per_second"),
        # Issue 11 defect 20: an UpDownCounter's unit 1 adds nothing (otlptranslator
        # suffixes only gauges with _ratio); UCUM's kBy is kilobytes.
        ("open.orders", "1", "updowncounter", "open_orders"),
        ("cache.size", "kBy", "gauge", "cache_size_kilobytes"),
    ],
)
def test_metric_names(name: str, unit: str, kind: str, expected: str) -> None:
    assert metric_name(name, unit, kind) == expected


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("label:with:colons", "label_with_colons"),
        ("label!with&special$chars)", "label_with_special_chars_"),
        ("label_with_foreign_characters_字符", "label_with_foreign_characters_"),
        ("123label", "key_123label"),
        ("__reserved__label__name__", "key__reserved_label_name__"),
        ("__name__", "key__name__"),
        ("trailing_underscores___", "trailing_underscores_"),
        ("ようこそ", ""),
        ("http.request.method", "http_request_method"),
        ("_private", "_private"),
    ],
)
def test_label_names(key: str, expected: str) -> None:
    assert label_name(key) == expected
