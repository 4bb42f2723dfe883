"""What leaves the sidecar: Prometheus exposition, span metrics, OTLP forwarding."""
