"""The strict channel contract end to end: field errors at write time (admin API and /channels/validate),
stored definitions that cannot run reported by /health, and credentials never written to the channel
topic (read back from the real broker)."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from confluent_kafka import Producer

from app.config_store.state import proposal_key
from app.kafka.config import producer_config
from app.kafka.producer import produce_sync
from app.settings import Settings
from tests.gateway.conftest import Admin, Gateway, eventually, parse_task
from tests.runtime.worker_support import read_records

pytestmark = pytest.mark.timeout(180)

ECHO_WF = {"workflow_id": "contract-echo", "name": "echo", "tasks": [parse_task()]}
CREDENTIALS = {
    "Authorization": "Bearer s3cret-token",
    "Cookie": "session=abc123",
    "Proxy-Authorization": "Basic cHJveHk6cGFzcw==",
    "X-Session-Token": "marked-secret",
    "X-Tenant": "t1",
}


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"api_key": ["k1"]}, "config.api_key"),
        ({"failure_mod": "fail_closed"}, "config.failure_mod"),
        ({"rate_limit": {"requests_per_second": 5, "brust": 10}}, "config.rate_limit.brust"),
        ({"tracing": "sometimes"}, "config.tracing"),
    ],
)
async def test_mistyped_settings_are_refused_at_write_with_the_field_path(
    gateway: Gateway, config: dict[str, Any], field: str
) -> None:
    doc = {"channel_id": "typo", "name": "typo", "channel_type": "sync", "config": config}
    created = await gateway.http.post("/api/v1/admin/channels", json=doc)
    assert created.status_code == 400, created.text
    error = created.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and field in error["message"]
    assert field in [d["field"] for d in error["details"]]
    assert (await gateway.http.get("/api/v1/admin/channels/typo")).status_code == 404  # nothing stored

    # /channels/validate shows the same errors and stores nothing
    report = (await gateway.http.post("/api/v1/admin/channels/validate", json=doc)).json()
    assert report["valid"] is False and [e["field"] for e in report["errors"]] == [d["field"] for d in error["details"]]


async def test_update_with_an_unknown_key_is_refused_and_the_draft_kept(gateway: Gateway) -> None:
    doc = {"channel_id": "upd", "name": "upd", "channel_type": "sync", "config": {"timeout_ms": 500}}
    assert (await gateway.http.post("/api/v1/admin/channels", json=doc)).status_code == 201
    bad = {**doc, "config": {"timeout_ms": 500, "api_key": ["k"]}}
    updated = await gateway.http.put("/api/v1/admin/channels/upd", json=bad)
    assert updated.status_code == 400 and updated.json()["error"]["details"][0]["field"] == "config.api_key"
    assert (await gateway.http.get("/api/v1/admin/channels/upd")).json()["data"]["config"] == {"timeout_ms": 500}


async def test_validate_accepts_a_good_definition_without_storing_it(gateway: Gateway) -> None:
    doc = {
        "channel_id": "good",
        "name": "good",
        "channel_type": "async",
        "protocol": "kafka",
        "topic": "incoming-orders",
        "consumer_group": "orion-orders",
        "config": {"api_keys": ["env://GOOD_KEY"], "tracing": "errors", "output": False},
    }
    report = (await gateway.http.post("/api/v1/admin/channels/validate", json=doc)).json()
    assert report == {"valid": True, "errors": [], "warnings": []}
    assert (await gateway.http.get("/api/v1/admin/channels/good")).status_code == 404


async def test_a_stored_channel_that_cannot_run_is_reported_by_health(gateway: Gateway, e2e_settings: Settings) -> None:
    # Written straight to the config topic (as a GitOps tool may), bypassing the admin API's check.
    version = {"name": "broken", "channel_type": "sync", "config": {"failure_mod": "fail_closed"}, "status": "active"}
    value = {
        "kind": "channel",
        "id": "broken",
        "op": "create",
        "expected_revision": 0,
        "revision": 1,
        "object": {"versions": {"1": {**version, "version": 1}}},
    }
    producer = Producer(producer_config(e2e_settings))
    key = proposal_key("channel", "broken", 1, "gitops")
    await asyncio.to_thread(produce_sync, producer, f"{e2e_settings.topic_prefix}config", orjson.dumps(value), key=key)

    async def reported() -> Any:
        body = (await gateway.http.get("/health")).json()
        found = [p for p in body["problems"] if p["kind"] == "channel" and p["id"] == "broken"]
        return found or None

    problem = (await eventually(reported))[0]
    assert problem["errors"][0]["field"] == "config.failure_mod"
    # The channel does not run (its settings are unknown), and the API says why.
    assert (await gateway.http.post("/api/v1/data/broken", json={"data": {}})).status_code == 404
    view = (await gateway.http.get("/api/v1/admin/channels/broken")).json()["data"]
    assert view["valid"] is False and view["validation_errors"][0]["field"] == "config.failure_mod"


async def _record_on_topic(settings: Settings, topic: str, trace_id: str) -> dict[str, Any]:
    def ours(records: list[Any]) -> bool:
        return any(dict(m.headers() or []).get("quasar-trace-id") == trace_id.encode() for m in records)

    records = await asyncio.to_thread(read_records, settings, topic, until=ours)
    msg = next(m for m in records if dict(m.headers() or []).get("quasar-trace-id") == trace_id.encode())
    doc: dict[str, Any] = orjson.loads(msg.value())
    return doc


async def test_credentials_in_http_headers_never_reach_the_channel_topic(
    gateway: Gateway, admin: Admin, e2e_settings: Settings
) -> None:
    await admin.workflow(ECHO_WF)
    headers_settings = {"creds": {"secret": ["X-Session-Token"]}, "creds-kept": {"keep_credentials": ["Authorization"]}}
    for name, headers in headers_settings.items():
        doc = {"name": name, "channel_type": "async", "workflow_id": "contract-echo", "config": {"headers": headers}}
        await admin.channel({"channel_id": name, **doc})
    stripped = await gateway.http.post("/api/v1/data/creds/async", json={"data": {"n": 1}}, headers=CREDENTIALS)
    assert stripped.status_code == 202, stripped.text
    kept = await gateway.http.post("/api/v1/data/creds-kept/async", json={"data": {"n": 2}}, headers=CREDENTIALS)
    assert kept.status_code == 202, kept.text

    prefix = e2e_settings.topic_prefix
    record = await _record_on_topic(e2e_settings, f"{prefix}ch.creds", stripped.json()["trace_id"])
    headers = record["metadata"]["headers"]
    assert headers["x-tenant"] == "t1"  # application headers stay
    for name in ("authorization", "cookie", "proxy-authorization", "x-session-token"):
        assert name not in headers
    raw = orjson.dumps(record)
    assert b"s3cret-token" not in raw and b"abc123" not in raw and b"marked-secret" not in raw

    # A channel that asks for one credential keeps that one only.
    record = await _record_on_topic(e2e_settings, f"{prefix}ch.creds-kept", kept.json()["trace_id"])
    headers = record["metadata"]["headers"]
    assert headers["authorization"] == "Bearer s3cret-token"
    assert "cookie" not in headers and "proxy-authorization" not in headers
