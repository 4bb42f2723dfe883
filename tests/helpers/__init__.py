"""Shared test helpers: real sidecar processes, OTLP builders and sinks, the metric contract, system binaries."""
