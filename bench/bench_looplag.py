"""Issue 11, defect 8: the event loop's lag while the sidecar takes the largest request
it accepts, per signal (traces, metrics) and encoding (protobuf, JSON, gzip, gRPC).

One sidecar runs with the default receiver limits. For each case the largest body the
limits let through is built (traces: at most the pipeline queue's capacity in spans, padded
with an attribute up to just under receiver.http.max_body_bytes, or
receiver.grpc.max_message_bytes for gRPC; metrics: as many points as fit), sent once, and
/healthz is polled every 20 ms meanwhile. Printed per case: the body size, the answer, the
request's wall time, the largest loop_lag_seconds /healthz reported (the sidecar's own
heartbeat), the slowest /healthz answer, and how many /healthz answers were not 200. A
10-span request is the baseline. The goal (issue 11): under 1 s in every row.

    .venv/bin/python bench/bench_looplag.py

Measured here (2 CPUs, other work running), max loop lag in seconds:

    case                   64 MiB, decoded on the loop   20 MiB, as now
    traces protobuf        0.14                          0.002-0.20
    traces JSON            5.59                          0.01-0.09
    traces JSON gzip       5.37                          0.11-0.12
    metrics protobuf       3.23                          0.13-0.41
    metrics JSON           10.76                         0.12-0.59
    metrics gRPC           3.12                          0.17-0.85
    baseline (10 spans)    0.001                         0.001-0.002

(the 0.4-0.85 s figures come from a run with 2.7 load average on 2 CPUs, before the
store's pieces were cut from 10,000 to 5,000 points.)
"""

from __future__ import annotations

import gzip
import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import free_port, sidecar
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from otlp_batches import make_metrics_request, make_request

from tickscope.agent.config import LimitsConfig
from tickscope.receivers.config import OTLPGRPCConfig, OTLPHTTPConfig

POLL_SECONDS = 0.02


def traces_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON: the protobuf JSON mapping with hex ids."""
    import base64

    obj = json_format.MessageToDict(request)
    for rs in obj.get("resourceSpans", []):
        for ss in rs.get("scopeSpans", []):
            for span in ss.get("spans", []):
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64decode(span[key]).hex()
    return json.dumps(obj, separators=(",", ":")).encode()


def largest_traces(
    limit: int, max_spans: int, encode: Callable[[ExportTraceServiceRequest], bytes]
) -> bytes:
    """`max_spans` shim-shaped spans, each padded by the same attribute so that the
    encoded body is just under `limit` (2% margin)."""
    request = make_request(max_spans, seed=11)
    bare = len(encode(request))
    if bare > limit * 0.98:  # even bare spans do not fit: fewer of them, unpadded
        return largest_traces(limit, int(max_spans * limit / bare * 0.97), encode)
    pad = int((limit * 0.98 - bare) / max_spans) - 16
    if pad > 0:
        value = "x" * pad
        for span in request.resource_spans[0].scope_spans[0].spans:
            span.attributes.append(KeyValue(key="pad", value=AnyValue(string_value=value)))
    body = encode(request)
    assert len(body) <= limit, (len(body), limit)
    return body


def largest_metrics(limit: int, encode: Callable[[ExportMetricsServiceRequest], bytes]) -> bytes:
    probe = ExportMetricsServiceRequest.FromString(make_metrics_request(3000, seed=11))
    points = int(3000 * limit * 0.97 / len(encode(probe)))
    request = ExportMetricsServiceRequest.FromString(make_metrics_request(points, seed=11))
    body = encode(request)
    assert len(body) <= limit, (len(body), limit)
    return body


def metrics_json(request: ExportMetricsServiceRequest) -> bytes:
    return json_format.MessageToJson(request, indent=None).encode()


@dataclass
class Probe:
    """Polls /healthz in a thread while a request runs."""

    url: str
    lags: list[float] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                with urllib.request.urlopen(self.url, timeout=30) as r:
                    body = json.load(r)
            except urllib.error.HTTPError as e:
                body = json.load(e)
                self.failures += 1
            except OSError:
                body = {}
                self.failures += 1
            self.latencies.append(time.perf_counter() - started)
            if "loop_lag_seconds" in body:
                self.lags.append(float(body["loop_lag_seconds"]))
            time.sleep(POLL_SECONDS)

    def __enter__(self) -> Probe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc: object) -> None:
        time.sleep(0.6)  # the heartbeat after the request reports its lag
        self._stop.set()
        self._thread.join(35)


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def grpc_call(target: str, method: str, body: bytes, limit: int) -> int:
    import grpc

    options = [("grpc.max_send_message_length", limit + 1024)]
    with grpc.insecure_channel(target, options=options) as channel:
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(body, timeout=120)
            return 0
        except grpc.RpcError as e:
            return int(e.code().value[0])


def main() -> int:
    http_limit = int(OTLPHTTPConfig().max_body_bytes)
    grpc_limit = int(OTLPGRPCConfig().max_message_bytes)
    capacity = LimitsConfig().queue_capacity_spans
    protobuf = ExportTraceServiceRequest.SerializeToString
    print(f"limits: http body {http_limit} B, grpc message {grpc_limit} B, queue {capacity} spans")
    print("building requests ...", flush=True)
    small = make_request(10, seed=1).SerializeToString()
    tr_pb = largest_traces(http_limit, capacity, protobuf)
    tr_js = largest_traces(http_limit, capacity, traces_json)
    tr_grpc = largest_traces(grpc_limit, capacity, protobuf)
    me_pb = largest_metrics(http_limit, ExportMetricsServiceRequest.SerializeToString)
    me_js = largest_metrics(http_limit, metrics_json)
    me_grpc = largest_metrics(grpc_limit, ExportMetricsServiceRequest.SerializeToString)
    pb, js = "application/x-protobuf", "application/json"
    gz = {"Content-Encoding": "gzip"}
    http_port, grpc_port = free_port(), free_port()
    config = {
        "receiver": {"http": {"port": http_port}, "grpc": {"port": grpc_port}},
        "host": {"interval": "2s"},
    }
    with sidecar(config) as (_proc, admin):
        base = f"http://127.0.0.1:{http_port}"
        target = f"127.0.0.1:{grpc_port}"
        traces_method = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
        metrics_method = "/opentelemetry.proto.collector.metrics.v1.MetricsService/Export"
        cases: list[tuple[str, int, Callable[[], int]]] = [
            ("baseline: traces, 10 spans", len(small),
             lambda: post(base + "/v1/traces", small, {"Content-Type": pb})),
            ("traces protobuf", len(tr_pb),
             lambda: post(base + "/v1/traces", tr_pb, {"Content-Type": pb})),
            ("traces protobuf gzip", len(tr_pb),
             lambda: post(base + "/v1/traces", gzip.compress(tr_pb, 1), {"Content-Type": pb, **gz})),
            ("traces JSON", len(tr_js),
             lambda: post(base + "/v1/traces", tr_js, {"Content-Type": js})),
            ("traces JSON gzip", len(tr_js),
             lambda: post(base + "/v1/traces", gzip.compress(tr_js, 1), {"Content-Type": js, **gz})),
            ("traces gRPC", len(tr_grpc),
             lambda: grpc_call(target, traces_method, tr_grpc, grpc_limit)),
            ("metrics protobuf", len(me_pb),
             lambda: post(base + "/v1/metrics", me_pb, {"Content-Type": pb})),
            ("metrics protobuf gzip", len(me_pb),
             lambda: post(base + "/v1/metrics", gzip.compress(me_pb, 1), {"Content-Type": pb, **gz})),
            ("metrics JSON", len(me_js),
             lambda: post(base + "/v1/metrics", me_js, {"Content-Type": js})),
            ("metrics JSON gzip", len(me_js),
             lambda: post(base + "/v1/metrics", gzip.compress(me_js, 1), {"Content-Type": js, **gz})),
            ("metrics gRPC", len(me_grpc),
             lambda: grpc_call(target, metrics_method, me_grpc, grpc_limit)),
        ]  # fmt: skip
        print(
            f"{'case':28} {'body MB':>8} {'answer':>6} {'request s':>9} "
            f"{'max loop lag s':>14} {'max /healthz s':>14} {'non-200':>7}"
        )
        for label, size, send in cases:
            with Probe(f"http://127.0.0.1:{admin}/healthz") as probe:
                started = time.perf_counter()
                status = send()
                took = time.perf_counter() - started
            print(
                f"{label:28} {size / 1e6:8.2f} {status:>6} {took:9.2f} "
                f"{max(probe.lags, default=float('nan')):14.3f} "
                f"{max(probe.latencies, default=float('nan')):14.3f} {probe.failures:7}",
                flush=True,
            )
    print("answer: HTTP status, or the gRPC status code (0 = OK)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
