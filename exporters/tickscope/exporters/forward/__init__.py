"""Upstream forwarding: received spans, unchanged, to an OTLP endpoint (a Collector,
Tempo, Jaeger), over OTLP/HTTP or OTLP/gRPC.

config.py (the `forward:` section), retry.py (backoff, jitter, Retry-After),
sender.py (the Sender interface and its results), http.py and grpc.py (one
sender per protocol; grpcio is loaded only for the gRPC one), forwarder.py (the
buffer, batching, retries and accounting).
"""

from tickscope.exporters.forward.config import ForwardConfig, RetryConfig
from tickscope.exporters.forward.forwarder import Forwarder

__all__ = ["ForwardConfig", "Forwarder", "RetryConfig"]
