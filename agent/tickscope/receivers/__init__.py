"""OTLP receivers: what the engine's shim sends spans and metrics to."""
