"""OTLP metrics on /metrics, by the OpenTelemetry specification's Prometheus
compatibility rules (compatibility/prometheus_and_openmetrics.md, "OTLP Metric
points to Prometheus"), names as in names.py.

Types:
- Gauge -> gauge.
- Sum, monotonic -> counter (name ends in _total). Cumulative points replace the
  stream's value; delta points are added to it (converted to cumulative).
  A cumulative stream that restarts (its start time changes, or its value goes
  down: the engine restarted) keeps counting from where it was, so Prometheus's
  rate() sees neither a negative step nor a missed reset (when the new value has
  already passed the old one by the time it is seen).
- Sum, non-monotonic, cumulative -> gauge; delta -> dropped, as the spec says
  (a sum of changes with no known base is no gauge), counted.
- Histogram (explicit buckets) -> histogram (_bucket, _count, _sum); delta points
  are added up, restarts of cumulative streams handled as for counters.
- Exponential histogram -> histogram with explicit buckets. Prometheus's native
  histograms need its protobuf exposition, which this text endpoint does not
  serve, so (as the spec allows) each populated bucket becomes an `le` bucket:
  positive bucket i of scale s covers (b^i, b^(i+1)] with b = 2^(2^-s), and its
  `le` is 2^((i+1)/2^s), correctly rounded (expohisto.bound); negative bucket i
  covers [-b^(i+1), -b^i), `le` -b^i; the zero bucket's `le` is the zero threshold
  (buckets inside it count in it; a bucket past 2^1024 counts in +Inf only). Delta points are merged exactly (both
  downscaled to the smaller scale, as the SDK merges them); past
  `max_exponential_buckets` buckets a histogram is downscaled until it fits.
- Summary -> summary (quantile series, _count, _sum).

Labels: the point's attributes (names.label_name; keys that
collide are merged, values joined with ";" in the order of the original keys;
le, quantile and __* renamed key_*; values by resource.label_value),
otel_scope_name / otel_scope_version / otel_scope_schema_url / otel_scope_<attr>,
and job / instance from the resource (service.namespace/service.name,
service.instance.id), which override attributes of the same name. The rest of the
resource goes to target_info (the info family `target` in OpenMetrics).

Points that would make an exposition invalid are refused at ingest (validate.py),
never stored, so render cannot fail; one name belongs to one family in both
formats (store.claimed_names).

Exemplars of histograms and monotonic sums are kept (trace_id, span_id) and
served with OpenMetrics: per bucket, the newest. A point flagged
NO_RECORDED_VALUE removes its stream; a stream not updated for `stale_after`
disappears. Each metric holds at most `max_series_per_metric` label sets; past
that, points fold into one series labelled otel_metric_overflow="true" where
that can be done correctly (gauges, sums, histograms with the same buckets) and
are rejected otherwise, counted either way.

Laid out as the Collector's prometheusexporter: config.py (the `metrics:`
section), names.py (metric and label names), resource.py (job, instance and
target_info from the resource; label sets), accumulator.py (streams and how each
point type accumulates), expohisto.py (exponential histogram maths, pure),
render.py (exposition text on tickscope.exposition), store.py (the families, the
ingest loop, limits and staleness).
"""

from tickscope.core.consumer import IngestResult
from tickscope.exporters.otlpmetrics.config import MetricsConfig
from tickscope.exporters.otlpmetrics.store import MetricStore

__all__ = ["IngestResult", "MetricStore", "MetricsConfig"]
