"""Issue 15 acceptance: every endpoint of seed 004's Admin API, Data API and operational tables, called
as Orion's guide calls it, through a real gateway on the real broker with a real worker.

One walk per resource, in the order a user meets them; each step checks the status and the shape an
Orion client reads. `docs/differences-from-orion.md` maps every table row to the step here (and to the
dedicated tests that go deeper).
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.gateway.conftest import Gateway, eventually

pytestmark = pytest.mark.timeout(240)

A = "/api/v1/admin"
D = "/api/v1/data"


async def ok(call: Any, status: int = 200) -> Any:
    r: httpx.Response = await call
    assert r.status_code == status, f"{r.request.method} {r.request.url}: {r.status_code} {r.text}"
    return r.json() if r.content else None


def orion_workflow(wid: str, threshold: int = 10000) -> dict[str, Any]:
    return {
        "workflow_id": wid,
        "name": "High-Value Order",
        "condition": True,
        "tags": ["orion-walk"],
        "tasks": [
            {"id": "parse", "name": "Parse payload",
             "function": {"name": "parse_json", "input": {"source": "payload", "target": "order"}}},
            {"id": "flag", "name": "Flag order", "condition": {">": [{"var": "data.order.total"}, threshold]},
             "function": {"name": "map", "input": {"mappings": [
                 {"path": "data.order.flagged", "logic": True},
                 {"path": "data.order.id", "logic": {"var": "metadata.params.order_id"}},
             ]}}},
        ],
    }  # fmt: skip


async def test_connectors_endpoints(gateway: Gateway) -> None:
    http = gateway.http
    doc = {
        "name": "walk-api",
        "connector_type": "http",
        "config": {"type": "http", "url": "https://api.example.com/v1", "auth": {"type": "bearer", "token": "sk-1"}},
    }
    created = (await ok(http.post(f"{A}/connectors", json=doc), 201))["data"]  # POST /connectors
    assert created["config"]["auth"]["token"] == "******"
    listed = await ok(http.get(f"{A}/connectors"))  # GET /connectors (secrets masked)
    assert any(c["name"] == "walk-api" and c["config"]["auth"]["token"] == "******" for c in listed["data"])
    got = (await ok(http.get(f"{A}/connectors/walk-api")))["data"]  # GET /connectors/{id}
    assert got["connector_type"] == "http"
    doc["config"]["url"] = "https://api.example.com/v2"
    put = (await ok(http.put(f"{A}/connectors/walk-api", json=doc)))["data"]  # PUT /connectors/{id}
    assert put["config"]["url"].endswith("/v2") and put["version"] == 2
    reloaded = await ok(http.post(f"{A}/connectors/reload"))  # POST /connectors/reload
    assert reloaded["reloaded"] is True and reloaded["connectors_count"] >= 1
    breakers = await ok(http.get(f"{A}/connectors/circuit-breakers"))  # GET /connectors/circuit-breakers
    assert isinstance(breakers["data"], list)
    # POST /connectors/circuit-breakers/{key}: an unknown key is 404 (a real reset: test_breakers_parity.py)
    r = await http.post(f"{A}/connectors/circuit-breakers/nobody:nothing")
    assert r.status_code == 404 and r.json()["error"]["code"] == "NOT_FOUND"
    assert (await http.delete(f"{A}/connectors/walk-api")).status_code == 204  # DELETE /connectors/{id}
    assert (await http.get(f"{A}/connectors/walk-api")).status_code == 404


async def test_workflows_endpoints(gateway: Gateway) -> None:
    http = gateway.http
    wid = "walk-wf"
    report = await ok(http.post(f"{A}/workflows/validate", json=orion_workflow(wid)))  # POST /workflows/validate
    assert report["valid"] is True
    v1 = (await ok(http.post(f"{A}/workflows", json=orion_workflow(wid)), 201))["data"]  # POST /workflows
    assert (v1["workflow_id"], v1["version"], v1["status"]) == (wid, 1, "draft")
    page = await ok(http.get(f"{A}/workflows", params={"tag": "orion-walk", "status": "draft"}))  # GET ?tag=&status=
    assert [w["workflow_id"] for w in page["data"]] == [wid]
    assert (await ok(http.get(f"{A}/workflows/{wid}")))["data"]["name"] == "High-Value Order"  # GET /{id}
    edited = (await ok(http.put(f"{A}/workflows/{wid}", json=orion_workflow(wid, 100))))["data"]  # PUT /{id}
    assert edited["version"] == 1
    test = await ok(http.post(f"{A}/workflows/{wid}/test", json={"data": {"total": 500}}))  # POST /{id}/test
    assert test["matched"] is True and [s["result"] for s in test["trace"]["steps"]] == ["executed", "executed"]
    active = (await ok(http.patch(f"{A}/workflows/{wid}/status", json={"status": "active"})))["data"]  # PATCH status
    assert active["status"] == "active"
    draft = (await ok(http.post(f"{A}/workflows/{wid}/versions"), 201))["data"]  # POST /{id}/versions
    assert (draft["version"], draft["status"]) == (2, "draft")
    body = {"status": "active", "rollout_percentage": 10}
    await ok(http.patch(f"{A}/workflows/{wid}/status", json=body))
    rolled = (await ok(http.patch(f"{A}/workflows/{wid}/rollout", json={"rollout_percentage": 50})))["data"]
    assert rolled["rollout_percentage"] == 50  # PATCH /{id}/rollout
    history = await ok(http.get(f"{A}/workflows/{wid}/versions"))  # GET /{id}/versions
    assert [(v["version"], v["status"]) for v in history["data"]] == [(2, "active"), (1, "active")]
    exported = await ok(http.get(f"{A}/workflows/export", params={"tag": "orion-walk", "status": "active"}))
    assert [w["workflow_id"] for w in exported["data"]] == [wid]  # GET /workflows/export
    copy = {**orion_workflow("walk-wf-copy")}
    dry = await ok(http.post(f"{A}/workflows/import", params={"dry_run": "true"}, json=[copy]))
    assert (dry["valid"], dry["imported"]) == (1, 0)
    imported = await ok(http.post(f"{A}/workflows/import", json=[copy]))  # POST /workflows/import
    assert imported["imported"] == 1
    assert (await http.delete(f"{A}/workflows/walk-wf-copy")).status_code == 204  # DELETE /{id}
    assert (await http.get(f"{A}/workflows/walk-wf-copy")).status_code == 404


async def test_channels_engine_audit_backup_and_data_endpoints(gateway: Gateway) -> None:
    http = gateway.http
    wf = orion_workflow("walk-orders-wf", threshold=10000)
    await ok(http.post(f"{A}/workflows", json=wf), 201)
    await ok(http.patch(f"{A}/workflows/walk-orders-wf/status", json={"status": "active"}))
    channel = {
        "channel_id": "walk-orders",
        "name": "walk-orders",
        "channel_type": "sync",
        "protocol": "rest",
        "methods": ["POST", "GET"],
        "route_pattern": "/walk-orders/{order_id}",
        "workflow_id": "walk-orders-wf",
    }
    created = (await ok(http.post(f"{A}/channels", json=channel), 201))["data"]  # POST /channels
    assert created["status"] == "draft"
    listed = await ok(
        http.get(f"{A}/channels", params={"status": "draft", "channel_type": "sync", "protocol": "rest"})
    )  # GET /channels?status=&channel_type=&protocol=
    assert "walk-orders" in [c["channel_id"] for c in listed["data"]]
    assert (await ok(http.get(f"{A}/channels/walk-orders")))["data"]["route_pattern"] == "/walk-orders/{order_id}"
    channel["priority"] = 5
    assert (await ok(http.put(f"{A}/channels/walk-orders", json=channel)))["data"]["priority"] == 5  # PUT /{id}
    await ok(http.patch(f"{A}/channels/walk-orders/status", json={"status": "active"}))  # PATCH /{id}/status
    await ok(http.post(f"{A}/channels/walk-orders/versions"), 201)  # POST /{id}/versions
    versions = await ok(http.get(f"{A}/channels/walk-orders/versions"))  # GET /{id}/versions
    assert [v["status"] for v in versions["data"]] == ["draft", "active"]

    # Engine, audit, backup
    status = await ok(http.get(f"{A}/engine/status"))  # GET /engine/status
    assert "walk-orders" in status["channels"] and status["active_workflows"] >= 1
    assert (await ok(http.post(f"{A}/engine/reload")))["reloaded"] is True  # POST /engine/reload
    audit = await ok(http.get(f"{A}/audit-logs", params={"action": "activate", "resource_type": "workflow"}))
    assert any(e["resource_id"] == "walk-orders-wf" for e in audit["data"])  # GET /audit-logs?action=&resource_type=
    backup = await ok(http.post(f"{A}/backup"))  # POST /backup
    assert any(o["id"] == "walk-orders" for o in backup["objects"])
    restored = await ok(http.post(f"{A}/restore", params={"prune": "false"}, json=backup))  # POST /restore
    assert restored["restored"] == 0 and restored["unchanged"] == restored["objects"]

    # Data API: by route pattern (sync and async), by channel name, traces
    r = await ok(http.post(f"{D}/walk-orders/ORD-1", json={"data": {"total": 25000}}))  # ANY /data/{path...}
    assert r["status"] == "ok" and r["data"]["order"] == {"total": 25000, "flagged": True, "id": "ORD-1"}
    assert r["errors"] == []
    r = await ok(http.post(f"{D}/walk-orders", json={"data": {"total": 1}}))  # POST /data/{channel}
    assert r["data"]["order"] == {"total": 1}
    queued = await ok(http.post(f"{D}/walk-orders/async", json={"data": {"total": 20000}}), 202)
    assert queued["status"] == "pending"  # POST /data/{channel}/async
    routed = await ok(http.post(f"{D}/walk-orders/ORD-2/async", json={"data": {"total": 20000}}), 202)
    # ANY /data/{path...}/async, then GET /data/traces/{id} until completed
    for trace_id in (queued["trace_id"], routed["trace_id"]):

        async def done(tid: str = trace_id) -> Any:
            t = await http.get(f"{D}/traces/{tid}")
            return t.json() if t.status_code == 200 and t.json()["status"] == "completed" else None

        trace = await eventually(done)
        assert trace["message"]["context"]["data"]["order"]["flagged"] is True
    page = await ok(http.get(f"{D}/traces", params={"channel": "walk-orders", "status": "completed", "mode": "async"}))
    assert {queued["trace_id"], routed["trace_id"]} <= {t["id"] for t in page["data"]}  # GET /data/traces?...

    assert (await http.delete(f"{A}/channels/walk-orders")).status_code == 204  # DELETE /channels/{id}
    assert (await http.post(f"{D}/walk-orders", json={"data": {}})).status_code == 404


async def test_operational_endpoints(gateway: Gateway) -> None:
    http = gateway.http
    health = await ok(http.get("/health"))  # GET /health
    assert health["status"] == "ok" and {"version", "uptime_seconds", "components"} <= set(health)
    assert (await ok(http.get("/healthz"))) == {"status": "ok"}  # GET /healthz
    assert (await ok(http.get("/readyz")))["status"] == "ready"  # GET /readyz
    metrics = await http.get("/metrics")  # GET /metrics
    assert metrics.status_code == 200 and "http_requests_total" in metrics.text
    docs = await http.get("/docs")  # GET /docs
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    spec = await ok(http.get("/api/v1/openapi.json"))  # GET /api/v1/openapi.json
    assert spec["openapi"].startswith("3.") and f"{A}/functions" in spec["paths"]
