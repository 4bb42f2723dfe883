"""The OTLP metrics exporter's configuration (the `metrics:` section)."""

from __future__ import annotations

from pydantic import Field

from tickscope.core.configtypes import Duration, StrictModel

__all__ = ["MetricsConfig"]


class MetricsConfig(StrictModel):
    enabled: bool = Field(True, description="Serve OTLP metrics (/v1/metrics, MetricsService).")
    stale_after: Duration = Field(
        300.0, description="A stream not updated for this long disappears from /metrics."
    )
    max_series_per_metric: int = Field(
        2000,
        ge=1,
        le=1_000_000,
        description="Label sets per metric; past it points fold into an "
        'otel_metric_overflow="true" series.',
    )
    max_exponential_buckets: int = Field(
        160, ge=2, le=1000, description="Most le buckets one exponential histogram becomes."
    )
    exponential_bound_cache: int = Field(
        16_384,
        ge=16,
        le=1_000_000,
        description="Exponential bucket bounds remembered between scrapes (each costs ~31 us "
        "to compute exactly; 16,384 take ~2.5 MB); when full the cache starts over.",
    )
