"""Backpressure, deterministically: the real receivers (aiohttp and grpc.aio servers
on 127.0.0.1) in this process, in front of a pipeline whose consumer is held back
until the test lets it run. A full queue must be answered at once with 429 /
RESOURCE_EXHAUSTED and a retry delay, and nothing else may change."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import aiohttp
import grpc
from google.protobuf import json_format
from google.rpc import error_details_pb2, status_pb2
from prometheus_client import CollectorRegistry

from helpers.otlp import many, request, to_otlp_json
from tickscope.connectors.spanmetrics import SpanMetrics, SpanMetricsConfig
from tickscope.connectors.spanstream import SpanStream
from tickscope.core.consumer import TraceBatch
from tickscope.core.health import Health
from tickscope.exporters.prometheus import render
from tickscope.pipeline import Pipeline
from tickscope.receivers.config import OTLPGRPCConfig, OTLPHTTPConfig
from tickscope.receivers.intake import Intake
from tickscope.receivers.metrics import ReceiverMetrics
from tickscope.receivers.otlp_grpc import TRACE_EXPORT_METHOD, OTLPGRPCReceiver
from tickscope.receivers.otlp_http import OTLPHTTPReceiver


@dataclass
class Stack:
    registry: CollectorRegistry
    pipeline: Pipeline
    spanmetrics: SpanMetrics
    http: OTLPHTTPReceiver
    grpc: OTLPGRPCReceiver

    def value(self, name: str, **labels: str) -> float | None:
        return self.registry.get_sample_value(name, labels)

    def calls(self, service: str) -> float:
        text = render(self.registry, rendered=[self.spanmetrics]).body.decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("traces_span_metrics_calls_total{")
            and f'service_name="{service}"' in line
        )


@asynccontextmanager
async def stack(capacity: int) -> AsyncIterator[Stack]:
    registry = CollectorRegistry()
    pipeline = Pipeline(capacity, registry)
    spanmetrics = SpanMetrics(SpanMetricsConfig(), registry)
    stream = SpanStream(spanmetrics, None)

    def aggregate(batch: TraceBatch) -> None:
        stream.consume_view(batch.view)

    pipeline.add_consumer("span_metrics", aggregate)
    intake = Intake(pipeline, ReceiverMetrics(registry, ("otlp_http", "otlp_grpc")))
    health = Health()
    http = OTLPHTTPReceiver(OTLPHTTPConfig(port=0), intake, health)
    grpc_receiver = OTLPGRPCReceiver(OTLPGRPCConfig(port=0), intake, health)
    await http.start()
    await grpc_receiver.start()
    try:
        yield Stack(registry, pipeline, spanmetrics, http, grpc_receiver)
    finally:
        await http.stop()
        await grpc_receiver.stop(0)
        await pipeline.stop(grace=1)


BODY = request("svc-bp", many("busy", 512)).SerializeToString()
BODY_JSON = to_otlp_json(request("svc-bp", many("busy", 512)))


def test_http_queue_full_then_recovers() -> None:
    async def scenario() -> None:
        async with stack(capacity=600) as s, aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{s.http.port}/v1/traces"

            async def post(
                content_type: str = "application/x-protobuf", body: bytes = BODY
            ) -> tuple[int, dict[str, str], bytes]:
                async with session.post(
                    url, data=body, headers={"Content-Type": content_type}
                ) as r:
                    return r.status, dict(r.headers), await r.read()

            # The consumer is not running: the first request fills the queue...
            assert (await post())[0] == 200
            assert s.pipeline.queued_spans == 512
            # ... and the next ones are refused at once, in either encoding.
            for content_type in ("application/x-protobuf", "application/json"):
                body = BODY if content_type != "application/json" else BODY_JSON
                status, headers, payload = await post(content_type, body)
                assert status == 429
                assert headers["Retry-After"] == "1"
                assert headers["Content-Type"] == content_type
                message = status_pb2.Status()
                if content_type == "application/json":
                    json_format.Parse(payload, message)
                else:
                    message.ParseFromString(payload)
                assert message.code == 8 and "queue full (600 spans)" in message.message
                info = error_details_pb2.RetryInfo()
                assert message.details[0].Unpack(info) and info.retry_delay.seconds == 1
            assert s.pipeline.queued_spans == 512  # nothing else changed
            assert (
                s.value(
                    "tickscope_receiver_rejected_requests_total",
                    receiver="otlp_http",
                    reason="queue_full",
                )
                == 2
            )
            assert s.value("tickscope_receiver_accepted_spans_total", receiver="otlp_http") == 512

            # Let the consumer run: the queue drains and requests are taken again.
            await s.pipeline.start()
            for _ in range(100):
                if s.pipeline.queued_spans == 0:
                    break
                await asyncio.sleep(0.01)
            assert (await post())[0] == 200
            for _ in range(100):
                if s.calls("svc-bp") == 1024:
                    break
                await asyncio.sleep(0.01)
            assert s.calls("svc-bp") == 1024

    asyncio.run(scenario())


def test_grpc_queue_full_then_recovers() -> None:
    async def scenario() -> None:
        async with (
            stack(capacity=600) as s,
            grpc.aio.insecure_channel(f"127.0.0.1:{s.grpc.port}") as channel,
        ):
            call = channel.unary_unary(
                TRACE_EXPORT_METHOD, request_serializer=None, response_deserializer=None
            )
            await call(BODY, timeout=10)
            assert s.pipeline.queued_spans == 512
            try:
                await call(BODY, timeout=10)
                raise AssertionError("a full queue took the request")
            except grpc.aio.AioRpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert "queue full" in (error.details() or "")
                details = dict(error.trailing_metadata())["grpc-status-details-bin"]
                info = error_details_pb2.RetryInfo()
                assert status_pb2.Status.FromString(details).details[0].Unpack(info)
                assert info.retry_delay.seconds == 1
            assert s.pipeline.queued_spans == 512
            assert (
                s.value(
                    "tickscope_receiver_rejected_requests_total",
                    receiver="otlp_grpc",
                    reason="queue_full",
                )
                == 1
            )
            assert (
                s.value(
                    "tickscope_receiver_rejected_spans_total",
                    receiver="otlp_grpc",
                    reason="queue_full",
                )
                == 512
            )
            await s.pipeline.start()
            for _ in range(100):
                if s.pipeline.queued_spans == 0:
                    break
                await asyncio.sleep(0.01)
            await call(BODY, timeout=10)
            for _ in range(100):
                if s.calls("svc-bp") == 1024:
                    break
                await asyncio.sleep(0.01)
            assert s.calls("svc-bp") == 1024

    asyncio.run(scenario())


def test_a_request_larger_than_the_queue_is_taken_when_the_queue_is_empty() -> None:
    async def scenario() -> None:
        async with stack(capacity=100) as s, aiohttp.ClientSession() as session:
            url = f"http://127.0.0.1:{s.http.port}/v1/traces"
            async with session.post(
                url, data=BODY, headers={"Content-Type": "application/x-protobuf"}
            ) as r:
                assert r.status == 200  # else it could never be taken at all

    asyncio.run(scenario())
