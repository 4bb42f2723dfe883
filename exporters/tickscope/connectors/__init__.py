"""Connectors: spans in, metrics out (span metrics and trading metrics), as the
OpenTelemetry Collector's spanmetrics connector turns traces into metrics."""
