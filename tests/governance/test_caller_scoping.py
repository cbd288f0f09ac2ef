"""Issue 14: who the caller is decides governance, and the caller cannot choose it.

- item 7: X-Forwarded-For / X-Real-IP are believed only from `trusted_proxies` (rotating them used to
  bypass the rate limit 20/20);
- Low: the audit actor cannot be forged through X-Forwarded-For either;
- item 3: traces are readable with admin credentials, or a channel's key for that channel's traces only.

Real broker, real worker, real gateways on loopback.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from app.settings import Settings
from tests.fixtures.kafka import make_test_settings
from tests.gateway.conftest import (
    Admin,
    Gateway,
    apply_quasar_topics,
    eventually,
    http_channel,
    map_task,
    parse_task,
    running_worker,
    start_gateway,
)

pytestmark = pytest.mark.timeout(240)

ECHO_WF = {
    "workflow_id": "scope-echo",
    "name": "scope-echo",
    "tasks": [parse_task("req"), map_task("mark", ("data.handled", True))],
}


def _channel(name: str, config: dict[str, Any]) -> dict[str, Any]:
    return http_channel(name, "scope-echo", config)


@pytest.fixture(scope="module")
def scope_settings(kafka_bootstrap: str) -> Settings:
    settings = make_test_settings(kafka_bootstrap, instance_id="scope-a", processing_timeout_ms=10_000)
    apply_quasar_topics(settings)
    return settings


@pytest.fixture(scope="module")
async def worker(scope_settings: Settings) -> AsyncIterator[Any]:
    async with running_worker(scope_settings, "scope-worker") as w:
        yield w


@pytest.fixture(scope="module")
async def gateway(scope_settings: Settings, worker: Any) -> AsyncIterator[Gateway]:
    gw = await start_gateway(scope_settings)
    try:
        admin = Admin(gw.http)
        await admin.workflow(ECHO_WF)
        await admin.channel(_channel("limited", {"rate_limit": {"requests_per_second": 0.1, "burst": 3}}))
        await admin.channel(_channel("proxied", {"rate_limit": {"requests_per_second": 0.1, "burst": 1}}))
        await admin.channel(_channel("keyed-a", {"api_keys": ["key-of-a"]}))
        await admin.channel(_channel("open-b", {}))
        await admin.channel(_channel("capped", {"backpressure": {"max_concurrent": 1}, "deduplication": {}}))
        yield gw
    finally:
        await gw.stop()


@pytest.fixture(scope="module")
async def behind_proxy(scope_settings: Settings, gateway: Gateway) -> AsyncIterator[Gateway]:
    """A gateway that trusts loopback as its reverse proxy."""
    trusting = scope_settings.model_copy(update={"instance_id": "scope-b", "trusted_proxies": ["127.0.0.1"]})
    gw = await start_gateway(trusting)
    try:
        yield gw
    finally:
        await gw.stop()


async def _statuses(gw: Gateway, path: str, headers: list[dict[str, str]]) -> list[int]:
    out = []
    for h in headers:
        r = await gw.http.post(path, json={"data": {}}, headers=h)
        out.append(r.status_code)
    return out


async def test_rotating_forwarded_headers_does_not_bypass_the_rate_limit(gateway: Gateway) -> None:
    forged = [{"X-Forwarded-For": f"203.0.113.{i}", "X-Real-IP": f"198.51.100.{i}"} for i in range(1, 11)]
    statuses = await _statuses(gateway, "/api/v1/data/limited", forged)
    assert set(statuses) <= {200, 429, 504}, statuses
    # One client (the loopback address) with a burst of 3: the forged addresses are not separate clients.
    assert statuses.count(429) >= 7, statuses


async def test_a_trusted_proxy_names_the_client(behind_proxy: Gateway) -> None:
    # Each forwarded client has its own bucket (burst 1): two distinct clients both pass once...
    first = await _statuses(behind_proxy, "/api/v1/data/proxied", [{"X-Forwarded-For": "203.0.113.7"}])
    other = await _statuses(behind_proxy, "/api/v1/data/proxied", [{"X-Forwarded-For": "203.0.113.8"}])
    again = await _statuses(behind_proxy, "/api/v1/data/proxied", [{"X-Forwarded-For": "203.0.113.7"}])
    assert first[0] != 429 and other[0] != 429, (first, other)
    assert again == [429]


async def test_the_audit_actor_cannot_be_forged_with_forwarded_headers(
    gateway: Gateway, scope_settings: Settings
) -> None:
    from confluent_kafka import Consumer, TopicPartition

    from app.kafka.config import reader_config
    from app.kafka.names import TopicNames

    wf = {**ECHO_WF, "workflow_id": f"forged-{uuid.uuid4().hex[:8]}", "name": "forged"}
    r = await gateway.http.post("/api/v1/admin/workflows", json=wf, headers={"X-Forwarded-For": "10.6.6.6"})
    assert r.status_code < 300, r.text
    topic = TopicNames(scope_settings.topic_prefix).audit
    consumer = Consumer(reader_config(scope_settings))
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        deadline = time.monotonic() + 30
        found: list[bytes] = []
        while time.monotonic() < deadline:
            msg = await asyncio.to_thread(consumer.poll, 0.5)
            if msg is not None and msg.error() is None and wf["workflow_id"].encode() in (msg.value() or b""):
                found.append(msg.value())
                break
        assert found, "no audit record for the write"
        assert b"10.6.6.6" not in found[0]
        assert b"127.0.0.1" in found[0]
    finally:
        consumer.close()


@pytest.fixture(scope="module")
async def admin_gateway(scope_settings: Settings, gateway: Gateway) -> AsyncIterator[Gateway]:
    """A gateway with admin auth on (the traces API follows it)."""
    locked = scope_settings.model_copy(
        update={"instance_id": "scope-c", "admin_auth_enabled": True, "admin_api_key": "admin-secret"}
    )
    gw = await start_gateway(locked)
    try:
        yield gw
    finally:
        await gw.stop()


async def test_traces_need_admin_credentials_or_the_channel_key(gateway: Gateway, admin_gateway: Gateway) -> None:
    a = await gateway.http.post("/api/v1/data/keyed-a/async", json={"data": {}}, headers={"X-API-Key": "key-of-a"})
    b = await gateway.http.post("/api/v1/data/open-b/async", json={"data": {}})
    assert a.status_code == 202 and b.status_code == 202, (a.text, b.text)
    trace_a, trace_b = a.json()["trace_id"], b.json()["trace_id"]
    admin = {"Authorization": "Bearer admin-secret"}

    async def completed(trace_id: str) -> bool:
        r = await admin_gateway.http.get(f"/api/v1/data/traces/{trace_id}", headers=admin)
        return r.status_code == 200 and r.json().get("status") == "completed"

    await eventually(lambda: completed(trace_a), within=60)
    await eventually(lambda: completed(trace_b), within=60)

    # Admin auth on: nothing without credentials.
    assert (await admin_gateway.http.get("/api/v1/data/traces")).status_code == 401
    assert (await admin_gateway.http.get(f"/api/v1/data/traces/{trace_b}")).status_code == 401
    # The channel's key reads that channel's traces only; another channel's trace does not exist for it.
    key_a = {"X-API-Key": "key-of-a"}
    listed = (await admin_gateway.http.get("/api/v1/data/traces", headers=key_a)).json()
    assert {t["channel"] for t in listed["data"]} == {"keyed-a"} and trace_a in {t["id"] for t in listed["data"]}
    assert (await admin_gateway.http.get(f"/api/v1/data/traces/{trace_a}", headers=key_a)).status_code == 200
    assert (await admin_gateway.http.get(f"/api/v1/data/traces/{trace_b}", headers=key_a)).status_code == 404
    # Admin credentials read everything, paginated.
    page = (await admin_gateway.http.get("/api/v1/data/traces", params={"limit": 1}, headers=admin)).json()
    assert len(page["data"]) == 1 and page["total"] >= 2 and page["next_offset"] == 1

    # Admin auth off: open channels' traces stay open, a keyed channel's need its key.
    assert (await gateway.http.get(f"/api/v1/data/traces/{trace_b}")).status_code == 200
    assert (await gateway.http.get(f"/api/v1/data/traces/{trace_a}")).status_code == 404
    assert (await gateway.http.get(f"/api/v1/data/traces/{trace_a}", headers=key_a)).status_code == 200
    listed = (await gateway.http.get("/api/v1/data/traces")).json()
    assert "keyed-a" not in {t["channel"] for t in listed["data"]}


async def test_a_503_does_not_use_up_the_idempotency_key(gateway: Gateway) -> None:
    """Item 9: only a request that ran keeps its key; one refused at capacity may be retried at once."""
    service = gateway.app.state.data_service
    key = {"Idempotency-Key": uuid.uuid4().hex}

    async def admitted() -> httpx.Response | None:  # the channel is known and its worker answers
        r = await gateway.http.post("/api/v1/data/capped", json={"data": {}})
        return r if r.status_code == 200 else None

    await eventually(admitted, within=60)
    policy = service._policies["capped"]
    policy.in_flight.n = policy.max_concurrent  # the channel is at capacity (as if a request were running)
    try:
        refused = await gateway.http.post("/api/v1/data/capped", json={"data": {}}, headers=key)
    finally:
        policy.in_flight.n = 0
    assert refused.status_code == 503, refused.text
    retry = await gateway.http.post("/api/v1/data/capped", json={"data": {}}, headers=key)
    assert retry.status_code == 200, retry.text
    again = await gateway.http.post("/api/v1/data/capped", json={"data": {}}, headers=key)
    assert again.status_code == 409, again.text
