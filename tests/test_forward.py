"""Upstream forwarding to a local OTLP sink: byte-identical spans, a dead upstream,
retries, and exact accounting."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from helpers.otlp import JSON, PROTOBUF, many, request, to_otlp_json
from helpers.otlp_sink import Answer, GRPCSink, HTTPSink, resource_spans_bytes, span_bytes
from helpers.sidecar import SidecarProcess, StartSidecar, http_post, sample_value


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sinks() -> Iterator[list]:
    started: list = []
    yield started
    for sink in started:
        sink.stop()


def forward_config(endpoint: str, **more: object) -> dict:
    return {
        "host": {"enabled": False},
        "forward": {
            "enabled": True,
            "endpoint": endpoint,
            "batch_timeout": "50ms",
            "retry": {"initial_interval": "50ms", "max_interval": "200ms", "max_elapsed": "60s"},
            **more,
        },
    }


def forward_counts(s: SidecarProcess) -> dict[str, float]:
    f = s.families()
    return {
        "sent": sample_value(f["tickscope_forward_sent_spans"]),
        "failed": sample_value(f["tickscope_forward_failed_spans"]),
        "dropped": sample_value(f["tickscope_forward_dropped_spans"], reason="buffer_full"),
        "buffered": sample_value(f["tickscope_forward_buffer_spans"]),
    }


def send(s: SidecarProcess, body: bytes, headers: dict[str, str] = PROTOBUF) -> float:
    started = time.monotonic()
    response = http_post(s.otlp_http_url + "/v1/traces", body, headers)
    assert response.status == 200, response.body
    return time.monotonic() - started


def test_spans_arrive_byte_identical_over_http(start_sidecar: StartSidecar, sinks: list) -> None:
    sink = HTTPSink().start()
    sinks.append(sink)
    s = start_sidecar(
        forward_config(f"http://127.0.0.1:{sink.port}", headers={"x-api-key": "k-123"})
    )
    sent = [
        request("svc-fwd", many("ccxt.fetch_ticker", 300, attributes={"exchange.id": "binance"})),
        request(
            "svc-fwd-2",
            many("ccxt.create_order", 5, attributes={"trading.order.side": "buy"}),
            resource={"k8s.pod.name": "p"},
        ),
    ]
    send(s, sent[0].SerializeToString())
    send(s, to_otlp_json(sent[1]), JSON)  # arrives as JSON, leaves as protobuf
    s.wait_until(lambda: sink.span_count() == 305, what="sink got every span")
    received = sink.requests()
    assert span_bytes(received) == span_bytes(sent)
    assert resource_spans_bytes(received) == resource_spans_bytes(sent)
    assert all(r.headers["x-api-key"] == "k-123" for r in sink.received)
    assert all(r.headers["Content-Type"] == "application/x-protobuf" for r in sink.received)
    s.wait_until(lambda: forward_counts(s)["sent"] == 305, what="sent counted")
    assert forward_counts(s) == {"sent": 305, "failed": 0, "dropped": 0, "buffered": 0}
    # The header value (a credential) is in no log line.
    assert not any("k-123" in line for line in s.raw_stderr)


def test_spans_arrive_byte_identical_over_grpc(start_sidecar: StartSidecar, sinks: list) -> None:
    sink = GRPCSink().start()
    sinks.append(sink)
    s = start_sidecar(
        forward_config(f"http://127.0.0.1:{sink.port}", protocol="grpc", compression="gzip")
    )
    sent = [request("svc-fwd-grpc", many("ccxt.fetch_balance", 50)) for _ in range(3)]
    for req in sent:
        send(s, req.SerializeToString())
    s.wait_until(lambda: sink.span_count() == 150, what="sink got every span")
    assert span_bytes(sink.requests()) == span_bytes(sent)
    s.wait_until(lambda: forward_counts(s)["sent"] == 150, what="sent counted")


def test_a_dead_upstream_costs_the_receiver_nothing_and_drops_are_exact(
    start_sidecar: StartSidecar, sinks: list
) -> None:
    port = free_port()  # nothing listens there yet
    s = start_sidecar(
        forward_config(f"http://127.0.0.1:{port}", buffer_spans=2048, max_batch_spans=512)
    )
    sent = [request("svc-dead", many("op", 512)) for _ in range(10)]
    latencies = [send(s, req.SerializeToString()) for req in sent]
    # The receiver never waits for the upstream (connection refused, backoff).
    assert max(latencies) < 1.0, latencies

    def settled() -> dict[str, float] | None:
        c = forward_counts(s)
        return c if c["dropped"] + c["buffered"] == 5120 else None

    counts = s.wait_until(settled, what="every span buffered or dropped")
    assert counts["sent"] == 0 and counts["failed"] == 0
    assert counts["dropped"] > 0 and counts["dropped"] % 512 == 0
    # The span metrics counted everything all along.
    f = s.families()
    assert (
        sum(
            x.value
            for x in f["traces_span_metrics_calls"].samples
            if x.labels.get("service_name") == "svc-dead"
        )
        == 5120
    )

    sink = HTTPSink(port).start()
    sinks.append(sink)
    s.wait_until(lambda: forward_counts(s)["buffered"] == 0, timeout=20, what="buffer flushed")
    final = forward_counts(s)
    assert final["sent"] + final["dropped"] == 5120
    assert final["failed"] == 0
    assert sink.span_count() == final["sent"]
    # What arrived is exactly a subset of what was sent, byte for byte.
    assert set(span_bytes(sink.requests())) <= set(span_bytes(sent))


def test_retry_after_is_honoured(start_sidecar: StartSidecar, sinks: list) -> None:
    sink = HTTPSink(
        answer=lambda n: Answer(503, {"Retry-After": "1"}) if n == 1 else Answer()
    ).start()
    sinks.append(sink)
    s = start_sidecar(forward_config(f"http://127.0.0.1:{sink.port}"))
    send(s, request("svc-retry", many("op", 10)).SerializeToString())
    s.wait_until(lambda: forward_counts(s)["sent"] == 10, timeout=10, what="sent after retry")
    first, second = sink.received[0], sink.received[1]
    assert second.at - first.at >= 0.9  # waited as told, not the 50 ms backoff
    assert first.body == second.body


def test_permanent_errors_and_partial_success_are_counted_as_failed(
    start_sidecar: StartSidecar, sinks: list
) -> None:
    partial = ExportTraceServiceResponse()
    partial.partial_success.rejected_spans = 3
    partial.partial_success.error_message = "3 spans too old"
    answers = {1: Answer(400), 2: Answer(200, body=partial.SerializeToString())}
    sink = HTTPSink(answer=lambda n: answers.get(n, Answer())).start()
    sinks.append(sink)
    s = start_sidecar(forward_config(f"http://127.0.0.1:{sink.port}"))
    send(s, request("svc-perm", many("op", 7)).SerializeToString())
    s.wait_until(lambda: forward_counts(s)["failed"] == 7, what="400 counted as failed")
    time.sleep(0.3)
    assert len(sink.received) == 1  # a 400 is not retried
    send(s, request("svc-perm", many("op", 10)).SerializeToString())
    s.wait_until(lambda: forward_counts(s)["sent"] == 7, what="partial success split")
    assert forward_counts(s)["failed"] == 7 + 3


def test_sigterm_flushes_buffered_spans_upstream(start_sidecar: StartSidecar, sinks: list) -> None:
    sink = HTTPSink().start()
    sinks.append(sink)
    # A long batch timeout: spans are still buffered when SIGTERM arrives.
    s = start_sidecar(forward_config(f"http://127.0.0.1:{sink.port}", batch_timeout="5s"))
    sent = request("svc-flush", many("op", 40))
    send(s, sent.SerializeToString())
    s.wait_until(lambda: forward_counts(s)["buffered"] == 40, what="buffered")
    assert sink.span_count() == 0
    assert s.stop() == 0
    assert sink.span_count() == 40
    assert span_bytes(sink.requests()) == span_bytes([sent])


def test_an_upstream_claiming_too_many_rejections_does_not_stop_forwarding(
    start_sidecar: StartSidecar, sinks: list
) -> None:
    silly = ExportTraceServiceResponse()
    silly.partial_success.rejected_spans = 999
    sink = HTTPSink(
        answer=lambda n: Answer(200, body=silly.SerializeToString()) if n == 1 else Answer()
    ).start()
    sinks.append(sink)
    s = start_sidecar(forward_config(f"http://127.0.0.1:{sink.port}"))
    send(s, request("svc-silly", many("op", 10)).SerializeToString())
    s.wait_until(lambda: forward_counts(s)["failed"] == 10, what="all 10 failed, not 999")
    send(s, request("svc-silly", many("op", 4)).SerializeToString())
    s.wait_until(lambda: forward_counts(s)["sent"] == 4, what="the sender lives on")


def test_resource_exhausted_without_retry_info_is_not_retried(
    start_sidecar: StartSidecar, sinks: list
) -> None:
    import grpc

    sink = GRPCSink(fail=grpc.StatusCode.RESOURCE_EXHAUSTED).start()
    sinks.append(sink)
    s = start_sidecar(forward_config(f"http://127.0.0.1:{sink.port}", protocol="grpc"))
    send(s, request("svc-exhausted", many("op", 6)).SerializeToString())
    s.wait_until(lambda: forward_counts(s)["failed"] == 6, what="failed for good")
    time.sleep(0.4)
    assert len(sink.received) == 1


def test_grpc_retry_info_and_headers(start_sidecar: StartSidecar, sinks: list) -> None:
    import grpc

    # RESOURCE_EXHAUSTED with a RetryInfo is retried (after the delay it asks for);
    # configured headers travel as lowercased metadata.
    sink = GRPCSink(fail=grpc.StatusCode.RESOURCE_EXHAUSTED, fail_times=1, retry_delay=0.3).start()
    sinks.append(sink)
    s = start_sidecar(
        forward_config(
            f"http://127.0.0.1:{sink.port}",
            protocol="grpc",
            headers={"X-Scope-OrgID": "desk-1"},
        )
    )
    send(s, request("svc-retryinfo", many("op", 5)).SerializeToString())
    s.wait_until(lambda: forward_counts(s)["sent"] == 5, what="sent on the second attempt")
    assert forward_counts(s)["failed"] == 0
    assert len(sink.received) == 2 and sink.received[0] == sink.received[1]
    assert all(m.get("x-scope-orgid") == "desk-1" for m in sink.metadata)


def test_batches_respect_max_batch_bytes(start_sidecar: StartSidecar, sinks: list) -> None:
    sink = HTTPSink().start()
    sinks.append(sink)
    s = start_sidecar(
        forward_config(
            f"http://127.0.0.1:{sink.port}", max_batch_bytes="20KiB", batch_timeout="300ms"
        )
    )
    bodies = [
        request("svc-bytes", many("op", 100, attributes={"pad": "x" * 100})).SerializeToString()
        for _ in range(4)
    ]
    assert all(10_000 < len(b) < 20_000 for b in bodies)
    for body in bodies:
        send(s, body)
    s.wait_until(lambda: sink.span_count() == 400, what="all spans")
    assert len(sink.received) == 4
    assert all(len(r.body) <= 20 * 1024 for r in sink.received)


def test_a_hung_upstream_at_shutdown_counts_the_batch_in_flight(
    start_sidecar: StartSidecar, sinks: list
) -> None:
    sink = HTTPSink(answer=lambda n: Answer(delay=30)).start()
    sinks.append(sink)
    s = start_sidecar(
        {
            **forward_config(f"http://127.0.0.1:{sink.port}"),
            "server": {"bind": "127.0.0.1", "port": 0, "shutdown_timeout": "2s"},
        }
    )
    send(s, request("svc-hung", many("op", 15)).SerializeToString())
    s.wait_until(lambda: len(sink.received) == 1, what="the export is in flight")
    assert s.stop() == 0
    lost = s.wait_for_log("spans not forwarded at shutdown")
    # Sent and never answered: the upstream may have them, so not "never sent".
    assert lost["spans"] == 15 and lost["reason"] == "unacknowledged"


def test_a_request_with_an_undecodable_attribute_is_counted_not_forwarded(
    start_sidecar: StartSidecar, sinks: list
) -> None:
    from tickscope.core.spanview import TracesView

    sink = HTTPSink().start()
    sinks.append(sink)
    s = start_sidecar(forward_config(f"http://127.0.0.1:{sink.port}"))
    good = request("svc-bad-attr", many("op", 3, attributes={"exchange.id": "binance"}))
    view = TracesView.FromString(good.SerializeToString())
    # A KeyValue whose key is not UTF-8: the request's structure is fine, its inside is not.
    view.resource_spans[0].scope_spans[0].spans[1].attributes.append(b"\n\x02\xff\xfe\x12\x00")
    send(s, view.SerializeToString())
    f = s.families_when(
        lambda f: sample_value(f["tickscope_receiver_invalid_attributes"]) == 1,
        "invalid attribute counted",
    )
    assert (
        sum(
            x.value
            for x in f["traces_span_metrics_calls"].samples
            if x.labels.get("service_name") == "svc-bad-attr"
        )
        == 3
    )
    assert sample_value(f["tickscope_forward_dropped_spans"], reason="invalid") == 3
    send(s, good.SerializeToString())
    s.wait_until(lambda: sink.span_count() == 3, what="the good request is forwarded")
