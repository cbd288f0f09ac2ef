"""Data API end to end: real HTTP -> gateway -> Kafka -> worker -> Kafka -> gateway, on the real broker."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.gateway.conftest import Admin, Gateway, eventually, map_task, parse_task

pytestmark = pytest.mark.timeout(180)

ORDERS_WF = {
    "workflow_id": "orders-wf",
    "name": "orders",
    "tasks": [
        parse_task("order"),
        map_task(
            "flag",
            ("data.order.flagged", {">": [{"var": "data.order.total"}, 10000]}),
            ("data.order.alert", {"cat": ["total=", {"var": "data.order.total"}]}),
        ),
    ],
}
ROUTE_WF = {
    "workflow_id": "route-wf",
    "name": "route",
    "tasks": [
        map_task(
            "echo",
            ("data.order_id", {"var": "metadata.params.order_id"}),
            ("data.item", {"var": "metadata.params.item_id"}),
            ("data.verbose", {"var": "metadata.query.verbose"}),
            ("data.method", {"var": "metadata.http_method"}),
            ("data.tenant", {"var": "metadata.headers.x-tenant-id"}),
            ("data.source", {"var": "metadata.source"}),
        )
    ],
}
_JSON = {"content-type": "application/json"}
GUARDED_WF = {"workflow_id": "guarded-wf", "name": "guarded", "tasks": [parse_task()]}


@pytest.fixture(scope="module")
async def channels(admin: Admin) -> None:
    await admin.workflow(ORDERS_WF)
    await admin.workflow(ROUTE_WF)
    await admin.workflow(GUARDED_WF)
    await admin.channel(
        {
            "channel_id": "orders",
            "name": "orders",
            "channel_type": "sync",
            "protocol": "http",
            "methods": ["POST"],
            "workflow_id": "orders-wf",
        }
    )
    await admin.channel(
        {
            "channel_id": "order-items",
            "name": "order-items",
            "channel_type": "sync",
            "protocol": "rest",
            "methods": ["GET", "PUT"],
            "route_pattern": "/orders/{order_id}/items/{item_id}",
            "workflow_id": "route-wf",
        }
    )
    await admin.channel(
        {
            "channel_id": "guarded",
            "name": "guarded",
            "channel_type": "sync",
            "protocol": "http",
            "methods": ["POST"],
            "workflow_id": "guarded-wf",
            "config": {
                "validation_logic": {"and": [{"var": "data.amount"}, {">": [{"var": "data.amount"}, 0]}]},
                "cors": {"allowed_origins": ["https://shop.example"]},
            },
        }
    )


async def test_sync_call_returns_the_workflow_result_in_orion_shape(gateway: Gateway, channels: None) -> None:
    r = await gateway.http.post(
        "/api/v1/data/orders",
        json={"data": {"order_id": "ORD-1", "total": 25000}},
        headers={"x-request-id": "req-123"},
    )
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "ok"
    assert body["errors"] == []
    assert body["data"]["order"] == {
        "order_id": "ORD-1",
        "total": 25000,
        "flagged": True,
        "alert": "total=25000",
    }
    assert isinstance(body["id"], str) and body["id"]
    assert r.headers["x-request-id"] == "req-123"
    assert r.headers["content-type"].startswith("application/json")


async def test_a_generated_request_id_is_echoed_when_the_caller_sends_none(gateway: Gateway, channels: None) -> None:
    r = await gateway.http.post("/api/v1/data/orders", json={"data": {"total": 1}})
    assert r.status_code == 200
    assert len(r.headers["x-request-id"]) >= 16
    assert r.json()["data"]["order"]["flagged"] is False


async def test_rest_route_puts_params_query_headers_and_method_into_metadata(gateway: Gateway, channels: None) -> None:
    r = await gateway.http.get(
        "/api/v1/data/ORDERS/ORD-9/items/it-3", params={"verbose": "yes"}, headers={"x-tenant-id": "acme"}
    )
    assert r.status_code == 200, r.text
    # A null mapping result writes nothing (Orion), so "source" is absent without body metadata.
    assert r.json()["data"] == {
        "order_id": "ORD-9",
        "item": "it-3",
        "verbose": "yes",
        "method": "GET",
        "tenant": "acme",
    }
    # Body metadata is merged in; the method must be listed on the channel.
    r = await gateway.http.put("/api/v1/data/orders/1/items/2", json={"data": {}, "metadata": {"source": "api"}})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["source"] == "api" and r.json()["data"]["method"] == "PUT"
    r = await gateway.http.delete("/api/v1/data/orders/1/items/2")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "NOT_FOUND", "message": "No channel matches DELETE /orders/1/items/2"}}


async def test_async_returns_202_and_the_trace_completes(gateway: Gateway, channels: None) -> None:
    r = await gateway.http.post("/api/v1/data/orders/async", json={"data": {"total": 20000}})
    assert r.status_code == 202, r.text
    trace_id = r.json()["trace_id"]
    assert r.json()["status"] == "pending"

    async def completed() -> dict[str, Any] | None:
        t = await gateway.http.get(f"/api/v1/data/traces/{trace_id}")
        assert t.status_code == 200, t.text
        return t.json() if t.json()["status"] == "completed" else None

    trace = await eventually(completed)
    assert trace["id"] == trace_id and trace["mode"] == "async" and trace["channel"] == "orders"
    assert trace["result"]["data"]["order"]["flagged"] is True


async def test_traces_are_readable_and_filterable_from_a_second_gateway(
    gateway: Gateway, gateway_b: Gateway, channels: None
) -> None:
    r = await gateway.http.post("/api/v1/data/orders/async", json={"data": {"total": 5}})
    trace_id = r.json()["trace_id"]

    async def seen_on_b() -> dict[str, Any] | None:
        t = await gateway_b.http.get(f"/api/v1/data/traces/{trace_id}")
        return t.json() if t.status_code == 200 and t.json()["status"] == "completed" else None

    trace = await eventually(seen_on_b)
    assert trace["channel"] == "orders" and trace["result"]["data"]["order"]["total"] == 5

    listed = (
        await gateway_b.http.get(
            "/api/v1/data/traces", params={"channel": "orders", "mode": "async", "status": "completed"}
        )
    ).json()
    assert trace_id in [t["id"] for t in listed["data"]]
    assert all(t["mode"] == "async" and t["status"] == "completed" for t in listed["data"])
    assert listed["total"] >= 1 and listed["limit"] == 50 and listed["offset"] == 0
    none = (await gateway_b.http.get("/api/v1/data/traces", params={"channel": "no-such-channel"})).json()
    assert none == {"data": [], "total": 0, "limit": 50, "offset": 0, "next_offset": None}
    bad = await gateway_b.http.get("/api/v1/data/traces", params={"status": "weird"})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "BAD_REQUEST"
    missing = await gateway_b.http.get("/api/v1/data/traces/does-not-exist")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "NOT_FOUND"


async def test_two_gateways_own_different_reply_partitions(gateway: Gateway, gateway_b: Gateway) -> None:
    a = gateway.app.state.bridge.partitions
    b = gateway_b.app.state.bridge.partitions
    assert a and b and set(a).isdisjoint(b)


async def test_concurrent_sync_calls_all_get_their_own_answer(gateway: Gateway, channels: None) -> None:
    totals = list(range(1, 201))
    replies = await asyncio.gather(
        *[gateway.http.post("/api/v1/data/orders", json={"data": {"total": t}}) for t in totals]
    )
    assert [r.status_code for r in replies] == [200] * len(totals)
    assert [r.json()["data"]["order"]["total"] for r in replies] == totals


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        ("orders", {"content": b"{not json", "headers": _JSON}, 400, "BAD_REQUEST"),
        ("orders", {"content": b"[1, 2]", "headers": _JSON}, 400, "BAD_REQUEST"),
        ("orders", {"json": {"data": {}, "metadata": "nope"}}, 400, "BAD_REQUEST"),
        (
            "orders",
            {"content": b"total=1", "headers": {"content-type": "text/plain"}},
            415,
            "UNSUPPORTED_MEDIA_TYPE",
        ),
        ("orders", {"content": b"{}"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ("nope", {"json": {"data": {}}}, 404, "NOT_FOUND"),
        ("nope/async", {"json": {"data": {}}}, 404, "NOT_FOUND"),
        ("orders", {"json": {"data": {"blob": "x" * 70_000}}}, 413, "PAYLOAD_TOO_LARGE"),
    ],
)
async def test_bad_requests_get_orion_errors(
    gateway: Gateway, channels: None, path: str, kwargs: dict[str, Any], status: int, code: str
) -> None:
    r = await gateway.http.post(f"/api/v1/data/{path}", **kwargs)
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code
    assert r.json()["error"]["message"]


async def test_oversized_chunked_body_is_refused_while_reading(gateway: Gateway, channels: None) -> None:
    async def chunks() -> Any:
        for _ in range(100):  # 100 x 1 KiB > 64 KiB, sent without a content-length
            yield b" " * 1024

    r = await gateway.http.post("/api/v1/data/orders", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


async def test_validation_logic_and_cors_guard_sync_and_async_requests(gateway: Gateway, channels: None) -> None:
    ok = await gateway.http.post("/api/v1/data/guarded", json={"data": {"amount": 5}})
    assert ok.status_code == 200, ok.text
    for path in ("guarded", "guarded/async"):
        r = await gateway.http.post(f"/api/v1/data/{path}", json={"data": {"amount": 0}})
        assert r.status_code == 400
        assert r.json() == {"error": {"code": "BAD_REQUEST", "message": "Input validation failed"}}
        r = await gateway.http.post(
            f"/api/v1/data/{path}", json={"data": {"amount": 5}}, headers={"origin": "https://evil.example"}
        )
        assert r.status_code == 403 and r.json()["error"]["code"] == "FORBIDDEN"
    allowed = await gateway.http.post(
        "/api/v1/data/guarded", json={"data": {"amount": 5}}, headers={"origin": "https://shop.example"}
    )
    assert allowed.status_code == 200


async def test_admin_write_is_seen_by_the_very_next_data_call(gateway: Gateway, admin: Admin) -> None:
    await admin.workflow({"workflow_id": "ver-wf", "name": "ver", "tasks": [map_task("v", ("data.v", 1))]})
    await admin.channel(
        {
            "channel_id": "versioned",
            "name": "versioned",
            "channel_type": "sync",
            "protocol": "http",
            "methods": ["POST"],
            "workflow_id": "ver-wf",
        }
    )
    first = await gateway.http.post("/api/v1/data/versioned", json={"data": {}})
    assert first.status_code == 200 and first.json()["data"] == {"v": 1}
    for version in (2, 3):
        r = await gateway.http.post("/api/v1/admin/workflows/ver-wf/versions")
        assert r.status_code < 300, r.text
        r = await gateway.http.put(
            "/api/v1/admin/workflows/ver-wf",
            json={"name": "ver", "tasks": [map_task("v", ("data.v", version))]},
        )
        assert r.status_code < 300, r.text
        r = await gateway.http.patch("/api/v1/admin/workflows/ver-wf/status", json={"status": "active"})
        assert r.status_code < 300, r.text
        after = await gateway.http.post("/api/v1/data/versioned", json={"data": {}})
        assert after.status_code == 200 and after.json()["data"] == {"v": version}


async def test_health_readiness_and_docs(gateway: Gateway) -> None:
    health = await gateway.http.get("/health")
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    components = health.json()["components"]
    assert {k: components[k] for k in ("broker", "config", "engine", "traces")} == dict.fromkeys(
        ("broker", "config", "engine", "traces"), "ok"
    )
    assert all(v in ("ok", "not_configured") for v in components.values())  # no Redis here
    assert (await gateway.http.get("/healthz")).json() == {"status": "ok"}
    ready = await gateway.http.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    spec = (await gateway.http.get("/api/v1/openapi.json")).json()
    assert "/api/v1/data/{channel}" in spec["paths"] and "/api/v1/data/traces/{trace_id}" in spec["paths"]
    docs = await gateway.http.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    wrong = await gateway.http.delete("/health")
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "METHOD_NOT_ALLOWED"
