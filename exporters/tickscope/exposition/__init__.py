"""Prometheus exposition text for the families the sidecar pre-renders (span
metrics, trading metrics, OTLP metrics): a leaf the connectors and exporters share."""
