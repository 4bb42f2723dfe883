"""The sidecar's shared leaf: config types, errors, readiness, the span view.

Every component (collectors, receivers, pipeline, connectors, exporters) may
import this package; it imports none of them, nor the host (tickscope.agent).
"""
