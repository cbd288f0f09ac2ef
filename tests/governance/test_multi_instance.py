"""Acceptance: two gateway instances (two apps on two loopback ports, same broker, same Redis) share one
rate limit, one idempotency key space and one response cache; a Redis outage fails open or closed per
channel and `/health` says degraded. Real broker, real worker, real Redis."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from app.settings import Settings
from tests.fixtures.kafka import make_test_settings
from tests.gateway.conftest import (
    Admin,
    Gateway,
    apply_quasar_topics,
    http_channel,
    map_task,
    parse_task,
    running_worker,
    start_gateway,
)
from tests.governance.conftest import PrivateRedis

pytestmark = pytest.mark.timeout(240)

ECHO_WF = {
    "workflow_id": "gov-echo",
    "name": "gov-echo",
    "tasks": [parse_task("req"), map_task("mark", ("data.handled", True))],
}


def _channel(name: str, config: dict[str, Any], channel_type: str = "sync") -> dict[str, Any]:
    return http_channel(name, "gov-echo", config, channel_type)


@pytest.fixture(scope="module")
def gov_settings(kafka_bootstrap: str, redis_server: str) -> Settings:
    # Redis db 0 is shared with other sessions: every key is namespaced by this module's topic prefix.
    settings = make_test_settings(
        kafka_bootstrap,
        instance_id="gov-a",
        redis_url=f"redis://{redis_server}/0",
        processing_timeout_ms=10_000,
    )
    apply_quasar_topics(settings)
    return settings


@pytest.fixture(scope="module")
async def worker(gov_settings: Settings) -> AsyncIterator[Any]:
    async with running_worker(gov_settings, "gov-worker") as w:
        yield w


@pytest.fixture(scope="module")
async def gateways(gov_settings: Settings, worker: Any) -> AsyncIterator[tuple[Gateway, Gateway]]:
    a = await start_gateway(gov_settings)
    b = await start_gateway(gov_settings.model_copy(update={"instance_id": "gov-b"}))
    try:
        admin = Admin(a.http)
        await admin.workflow(ECHO_WF)
        await admin.channel(_channel("limited", {"rate_limit": {"requests_per_second": 2, "burst": 4}}))
        await admin.channel(_channel("dedup", {"deduplication": {"window_secs": 60}}))
        await admin.channel(_channel("dedup-async", {"deduplication": {}}, "async"))
        await admin.channel(_channel("dedup-orig", {"deduplication": {"return_original": True}}))
        await admin.channel(_channel("cached", {"cache": {"enabled": True, "cache_key_fields": ["data.user"]}}))
        await admin.channel(_channel("keyed", {"api_keys": ["chan-key-1"]}))
        # instance b sees the config once its reader applied it: wait for a channel to resolve there
        await _until_served(b, "/api/v1/data/keyed")
        # the worker subscribes to each new channel topic (a group rebalance each): wait until it
        # answers on the last one, so no test measures subscription latency
        await _until_answered(a, "/api/v1/data/keyed", {"X-API-Key": "chan-key-1"})
        yield a, b
    finally:
        await b.stop()
        await a.stop()


async def _until_served(gw: Gateway, path: str, within_s: float = 15.0) -> None:
    deadline = time.monotonic() + within_s
    while (await gw.http.post(path, json={"data": {}})).status_code == 404:
        assert time.monotonic() < deadline, f"{path} never became known on {gw.url}"
        await asyncio.sleep(0.05)  # polling an HTTP API for config propagation


async def _until_answered(gw: Gateway, path: str, headers: dict[str, str], within_s: float = 60.0) -> None:
    deadline = time.monotonic() + within_s
    while True:
        r = await gw.http.post(path, json={"data": {}}, headers=headers, timeout=15.0)
        if r.status_code == 200:
            return
        assert r.status_code == 504 and time.monotonic() < deadline, (r.status_code, r.text)


def _failed_open(channel: str) -> float:
    """Rate-limit decisions taken without the shared store (both gateways run in this process)."""
    labels = {"channel": channel, "feature": "rate_limit", "mode": "fail_open"}
    return REGISTRY.get_sample_value("quasar_governance_degraded_total", labels) or 0.0


async def test_rate_limit_is_enforced_across_both_instances(gateways: tuple[Gateway, Gateway]) -> None:
    a, b = gateways
    failed_open_before = _failed_open("limited")
    started = time.monotonic()
    responses = await asyncio.gather(
        *[(a if i % 2 else b).http.post("/api/v1/data/limited", json={"data": {"i": i}}) for i in range(16)]
    )
    elapsed = time.monotonic() - started
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 429}, statuses
    # On a loaded box a first connection to Redis can miss the store's 250 ms timeout: that request is
    # admitted uncharged (fail_open, by design, counted). Only the requests the shared bucket decided count.
    failed_open = int(_failed_open("limited") - failed_open_before)
    assert failed_open <= 4, f"{failed_open} of 16 decided without Redis: the batch proves nothing"
    charged = statuses.count(200) - failed_open
    # burst 4 + 2/s refill while the batch ran; per-instance buckets would let 8 (2 x burst) through
    assert 4 <= charged <= 4 + int(2 * elapsed) + 1, (charged, failed_open, elapsed)
    assert charged < 8, (charged, failed_open, elapsed)
    served_by = {id(gw) for gw, r in zip([b, a] * 8, responses, strict=True) if r.status_code == 200}
    assert served_by  # at least one allowed request on some instance
    rejected = next(r for r in responses if r.status_code == 429)
    assert rejected.json() == {"error": {"code": "RATE_LIMITED", "message": "Too many requests"}}
    assert int(rejected.headers["retry-after"]) >= 1


async def test_duplicate_idempotency_key_is_caught_on_the_other_instance(
    gateways: tuple[Gateway, Gateway],
) -> None:
    a, b = gateways
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await a.http.post("/api/v1/data/dedup", json={"data": {"n": 1}}, headers=key)
    assert first.status_code == 200, first.text
    dup = await b.http.post("/api/v1/data/dedup", json={"data": {"n": 1}}, headers=key)
    assert dup.status_code == 409, dup.text
    assert dup.json()["error"]["code"] == "CONFLICT"
    # the same key on another channel is not a duplicate (scoped per channel)
    other = await b.http.post("/api/v1/data/dedup-orig", json={"data": {}}, headers=key)
    assert other.status_code == 200, other.text


async def test_async_requests_are_deduplicated_too(gateways: tuple[Gateway, Gateway]) -> None:
    a, b = gateways
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await a.http.post("/api/v1/data/dedup-async/async", json={"data": {}}, headers=key)
    assert first.status_code == 202, first.text
    dup = await b.http.post("/api/v1/data/dedup-async/async", json={"data": {}}, headers=key)
    assert dup.status_code == 409, dup.text


async def test_return_original_replays_the_first_answer_on_the_other_instance(
    gateways: tuple[Gateway, Gateway],
) -> None:
    a, b = gateways
    key = {"Idempotency-Key": uuid.uuid4().hex}
    first = await a.http.post("/api/v1/data/dedup-orig", json={"data": {"v": 1}}, headers={**key, "x-request-id": "r1"})
    assert first.status_code == 200, first.text
    replay = await b.http.post(
        "/api/v1/data/dedup-orig", json={"data": {"v": 2}}, headers={**key, "x-request-id": "r2"}
    )
    assert replay.status_code == 200
    assert replay.json() == first.json()  # the stored original, not a new run (its id is r1's)
    assert replay.headers["idempotent-replayed"] == "true"


async def test_cached_response_is_served_by_the_other_instance(gateways: tuple[Gateway, Gateway]) -> None:
    a, b = gateways
    user = uuid.uuid4().hex
    first = await a.http.post("/api/v1/data/cached", json={"data": {"user": user}}, headers={"x-request-id": "c-1"})
    assert first.status_code == 200 and "x-cache" not in first.headers
    hit = await b.http.post(
        "/api/v1/data/cached", json={"data": {"user": user, "other": 1}}, headers={"x-request-id": "c-2"}
    )
    assert hit.status_code == 200 and hit.headers["x-cache"] == "hit"
    assert hit.json() == first.json() and hit.json()["id"] == first.json()["id"]
    miss = await b.http.post("/api/v1/data/cached", json={"data": {"user": user + "x"}})
    assert miss.status_code == 200 and "x-cache" not in miss.headers
    metrics = (await b.http.get("/metrics")).text
    assert 'quasar_response_cache_hits_total{channel="cached"}' in metrics


async def test_channel_api_keys_on_the_data_api(gateways: tuple[Gateway, Gateway]) -> None:
    a, b = gateways
    for headers in ({}, {"X-API-Key": "nope"}, {"Authorization": "Bearer nope"}):
        r = await b.http.post("/api/v1/data/keyed", json={"data": {}}, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "UNAUTHORIZED"
    assert (
        await a.http.post("/api/v1/data/keyed", json={"data": {}}, headers={"X-API-Key": "chan-key-1"})
    ).status_code == 200
    # the channel's keys never come back unmasked from any admin response
    await _assert_never_exposed(a, "chan-key-1")


async def _assert_never_exposed(gw: Gateway, secret: str) -> None:
    """GET every admin route (path params filled with the `keyed` channel / the echo workflow)."""
    paths = (await gw.http.get("/api/v1/openapi.json")).json()["paths"]
    ids = {"channels": "keyed", "workflows": "gov-echo", "connectors": "none"}
    checked = 0
    for path, ops in paths.items():
        if not path.startswith("/api/v1/admin") or "get" not in ops:
            continue
        kind = path.removeprefix("/api/v1/admin/").split("/", 1)[0]
        url = path.replace("{object_id}", ids.get(kind, "x")).replace("{version}", "1")
        if "{" in url:
            url = url.split("{", 1)[0].rstrip("/")
        r = await gw.http.get(url)
        assert secret not in r.text, (url, r.text[:500])
        checked += r.status_code == 200
    assert checked >= 5
    doc = (await gw.http.get("/api/v1/admin/channels/keyed")).json()["data"]
    assert doc["config"]["api_keys"] == ["******"]


async def test_redis_outage_fails_open_or_closed_and_health_degrades(
    gov_settings: Settings, gateways: tuple[Gateway, Gateway]
) -> None:
    a, _ = gateways
    admin = Admin(a.http)
    limits = {"rate_limit": {"requests_per_second": 1000}, "deduplication": {}}
    await admin.channel(_channel("open-ch", limits))
    await admin.channel(_channel("closed-ch", {**limits, "failure_mode": "fail_closed"}))
    private = PrivateRedis()
    private.start()
    gw: Gateway | None = None
    try:
        gw = await start_gateway(gov_settings.model_copy(update={"instance_id": "gov-c", "redis_url": private.url}))
        for ch in ("open-ch", "closed-ch"):
            await _until_served(gw, f"/api/v1/data/{ch}")
        health = await gw.http.get("/health")
        assert health.json()["components"]["governance"] == "ok"

        private.stop()  # Redis dies mid-test
        key = {"Idempotency-Key": "same-key"}
        for _ in range(2):  # fail open: served, and the duplicate is not caught (no shared state)
            r = await gw.http.post("/api/v1/data/open-ch", json={"data": {}}, headers=key)
            assert r.status_code == 200, r.text
        started = time.monotonic()
        r = await gw.http.post("/api/v1/data/closed-ch", json={"data": {}}, headers=key)
        assert r.status_code == 503 and r.json()["error"]["code"] == "SERVICE_UNAVAILABLE", r.text
        assert time.monotonic() - started < 2.0  # a dead Redis never stalls a request
        health = await gw.http.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "degraded"
        assert health.json()["components"]["governance"].startswith("degraded")
        metrics = (await gw.http.get("/metrics")).text
        assert (
            'quasar_governance_degraded_total{channel="closed-ch",feature="rate_limit",mode="fail_closed"}' in metrics
        )

        private.start()  # back: the probe clears the flag, fail_closed channels serve again
        deadline = time.monotonic() + 10
        while (await gw.http.get("/health")).json()["components"].get("governance") != "ok":
            assert time.monotonic() < deadline, "governance still degraded after Redis came back"
            await asyncio.sleep(0.1)  # polling /health, as a monitor does
        r = await gw.http.post("/api/v1/data/closed-ch", json={"data": {}}, headers={"Idempotency-Key": "k2"})
        assert r.status_code == 200, r.text
    finally:
        if gw is not None:
            await gw.stop()
        private.stop()
