"""Issue 15 (OpenTelemetry): one request through gateway -> Kafka -> worker -> http_call is ONE trace, exported
over OTLP/HTTP to a real receiver running in this test (aiohttp + the official OTLP protobuf definitions from
`opentelemetry-proto`), and the called service receives a traceparent of that same trace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from app.kafka.broker import free_port
from app.settings import Settings
from app.worker.runner import ChannelWorker
from tests.connectors.servers import HttpTestServer
from tests.gateway.conftest import eventually, parse_task, running_gateway

pytestmark = pytest.mark.timeout(180)


class OtlpReceiver:
    """OTLP/HTTP trace receiver: decodes each export request, keeps (trace id, span id, parent, name, service)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.port = free_port()
        self._runner: web.AppRunner | None = None

    async def _export(self, request: web.Request) -> web.Response:
        body = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in body.resource_spans:
            service = next(
                (a.value.string_value for a in resource_spans.resource.attributes if a.key == "service.name"), ""
            )
            for scope in resource_spans.scope_spans:
                for span in scope.spans:
                    self.spans.append(
                        {
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent": span.parent_span_id.hex(),
                            "name": span.name,
                            "service": service,
                        }
                    )
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(), content_type="application/x-protobuf"
        )

    async def start(self) -> OtlpReceiver:
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def http_server() -> AsyncIterator[HttpTestServer]:
    """The loopback upstream the workflows call (as in tests/connectors)."""
    server = await HttpTestServer().start()
    yield server
    await server.stop()


@pytest.fixture
async def receiver() -> AsyncIterator[OtlpReceiver]:
    r = await OtlpReceiver().start()
    yield r
    await r.stop()


async def test_one_request_is_one_trace_across_gateway_worker_and_http_call(
    e2e_settings: Settings, receiver: OtlpReceiver, http_server: HttpTestServer
) -> None:
    traced = e2e_settings.model_copy(
        update={
            "tracing_enabled": True,
            "tracing_otlp_endpoint": f"http://127.0.0.1:{receiver.port}",
            "tracing_service_name": "quasar-test",
            "tracing_sample_rate": 1.0,
        }
    )
    worker = ChannelWorker(traced.model_copy(update={"instance_id": "worker-otel"}), group_id="otel-group")
    await worker.start()
    try:
        async with running_gateway(traced.model_copy(update={"instance_id": "gw-otel"})) as gw:
            connector = {
                "name": "echo-api",
                "connector_type": "http",
                "config": {"url": http_server.url, "allow_private_urls": True},
            }
            assert (await gw.http.post("/api/v1/admin/connectors", json=connector)).status_code == 201
            workflow = {
                "workflow_id": "otel-wf",
                "name": "otel",
                "tasks": [
                    parse_task(),
                    {"id": "call", "name": "call", "function": {"name": "http_call", "input": {
                        "connector": "echo-api", "path": "/echo/x", "response_path": "data.reply"}}},
                ],
            }  # fmt: skip
            assert (await gw.http.post("/api/v1/admin/workflows", json=workflow)).status_code == 201
            await gw.http.patch("/api/v1/admin/workflows/otel-wf/status", json={"status": "active"})
            channel = {"channel_id": "otel", "name": "otel", "workflow_id": "otel-wf"}
            assert (await gw.http.post("/api/v1/admin/channels", json=channel)).status_code == 201
            await gw.http.patch("/api/v1/admin/channels/otel/status", json={"status": "active"})

            r = await gw.http.post("/api/v1/data/otel", json={"data": {"n": 1}})  # no traceparent sent
            assert r.status_code == 200, r.text
            upstream = r.json()["data"]["reply"]["headers"]["traceparent"]
            trace_id = upstream.split("-")[1]

            def names() -> set[str]:
                return {s["name"] for s in receiver.spans if s["trace_id"] == trace_id}

            async def complete() -> bool:
                got = names()
                return {"POST /api/v1/data/otel", "process otel", "workflow otel-wf", "http_call echo-api"} <= got

            await eventually(complete, within=30)
    finally:
        await worker.stop()

    spans = {s["name"]: s for s in receiver.spans if s["trace_id"] == trace_id}
    assert {s["service"] for s in spans.values()} == {"quasar-test"}
    # The parent chain: gateway request -> worker record -> workflow -> task; the http_call span is the
    # worker record's child, and the called service got the http_call span's own context.
    assert spans["process otel"]["parent"] == spans["POST /api/v1/data/otel"]["span_id"]
    assert spans["workflow otel-wf"]["parent"] == spans["process otel"]["span_id"]
    assert spans["task call"]["parent"] == spans["workflow otel-wf"]["span_id"]
    assert spans["http_call echo-api"]["parent"] == spans["process otel"]["span_id"]
    assert upstream.split("-")[2] == spans["http_call echo-api"]["span_id"]


async def test_without_tracing_every_http_call_of_a_request_shares_its_trace_id(
    gateway: Any, http_server: HttpTestServer
) -> None:
    http = gateway.http
    connector = {
        "name": "echo-2",
        "connector_type": "http",
        "config": {"url": http_server.url, "allow_private_urls": True},
    }
    assert (await http.post("/api/v1/admin/connectors", json=connector)).status_code == 201
    calls = [
        {"id": f"c{i}", "name": f"c{i}", "function": {"name": "http_call", "input": {
            "connector": "echo-2", "path": f"/echo/{i}", "response_path": f"data.r{i}"}}}
        for i in (1, 2)
    ]  # fmt: skip
    workflow = {"workflow_id": "two-calls", "name": "two", "tasks": [parse_task(), *calls]}
    assert (await http.post("/api/v1/admin/workflows", json=workflow)).status_code == 201
    await http.patch("/api/v1/admin/workflows/two-calls/status", json={"status": "active"})
    await http.post("/api/v1/admin/channels", json={"channel_id": "two", "name": "two", "workflow_id": "two-calls"})
    await http.patch("/api/v1/admin/channels/two/status", json={"status": "active"})
    r = await http.post("/api/v1/data/two", json={"data": {}})
    assert r.status_code == 200, r.text
    parents = [r.json()["data"][f"r{i}"]["headers"]["traceparent"] for i in (1, 2)]
    trace_ids = {p.split("-")[1] for p in parents}
    assert len(trace_ids) == 1, parents  # one trace for the request (each call got its own before)
    assert parents[0].split("-")[2] != parents[1].split("-")[2]  # each call its own span id
