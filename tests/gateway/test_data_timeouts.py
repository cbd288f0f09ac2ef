"""Data API without a worker: 504 on timeout, 503 backpressure, the guard seam, reply routing details."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from starlette.responses import Response

from app.gateway.data import ChannelGuards, DataContext
from app.gateway.reply_router import choose_partitions
from app.settings import Settings
from tests.fixtures.kafka import make_test_settings
from tests.gateway.conftest import Admin, Gateway, apply_quasar_topics, map_task, running_gateway

pytestmark = pytest.mark.timeout(120)


async def _cached(ctx: DataContext) -> Response | None:
    # A governance hook as the cache will be: it may answer instead of the worker.
    if ctx.headers.get("x-cached") == "1":
        return Response(orjson.dumps({"cached": ctx.channel.name, "data": ctx.data}), media_type="application/json")
    return None


@pytest.fixture(scope="module")
def lonely_settings(kafka_bootstrap: str) -> Settings:
    settings = make_test_settings(kafka_bootstrap, instance_id="gw-lonely", processing_timeout_ms=5_000)
    apply_quasar_topics(settings)
    return settings


@pytest.fixture(scope="module")
async def lonely(lonely_settings: Settings) -> AsyncIterator[Gateway]:
    """A gateway whose channels no worker serves."""
    async with running_gateway(lonely_settings, guards=ChannelGuards([_cached])) as gw:
        admin = Admin(gw.http)
        await admin.workflow({"workflow_id": "wf", "name": "wf", "tasks": [map_task("t", ("data.x", 1))]})
        await admin.channel(
            {
                "channel_id": "slow",
                "name": "slow",
                "channel_type": "sync",
                "protocol": "http",
                "methods": ["POST"],
                "workflow_id": "wf",
                "config": {"timeout_ms": 300, "backpressure": {"max_concurrent": 1}},
            }
        )
        yield gw


async def test_no_reply_within_timeout_ms_is_504_timeout(lonely: Gateway) -> None:
    r = await lonely.http.post("/api/v1/data/slow", json={"data": {}})
    assert r.status_code == 504
    assert r.json() == {
        "error": {"code": "TIMEOUT", "message": "Workflow execution on channel 'slow' exceeded 300ms timeout"}
    }
    assert lonely.app.state.bridge.in_flight == 0  # the waiter is gone


async def test_backpressure_rejects_beyond_max_concurrent_with_503(lonely: Gateway) -> None:
    first = asyncio.create_task(lonely.http.post("/api/v1/data/slow", json={"data": {}}))
    service = lonely.app.state.data_service

    async def admitted() -> None:
        while service._policies.get("slow") is None or service._policies["slow"].in_flight.n < 1:  # noqa: ASYNC110
            await asyncio.sleep(0.005)  # the first request is being admitted by the same loop

    await asyncio.wait_for(admitted(), 5)
    second = await lonely.http.post("/api/v1/data/slow", json={"data": {}})
    assert second.status_code == 503
    assert second.json()["error"] == {
        "code": "SERVICE_UNAVAILABLE",
        "message": "Channel 'slow' is at capacity",
    }
    assert (await first).status_code == 504


async def test_a_config_change_during_a_request_does_not_leak_capacity(lonely: Gateway) -> None:
    # Review finding: each new config snapshot copied the in-flight count, and the requests admitted before
    # it counted down the old copy: after a few changes a max_concurrent channel refused everyone (503).
    service = lonely.app.state.data_service
    for round_ in range(3):
        first = asyncio.create_task(lonely.http.post("/api/v1/data/slow", json={"data": {}}))

        async def admitted() -> None:
            while service._policies.get("slow") is None or service._policies["slow"].in_flight.n < 1:  # noqa: ASYNC110
                await asyncio.sleep(0.005)

        await asyncio.wait_for(admitted(), 5)
        # Any config change makes a new snapshot while the request waits (here: a new workflow).
        await Admin(lonely.http).workflow(
            {"workflow_id": f"other-{round_}", "name": "o", "tasks": [map_task("t", ("data.x", 1))]}
        )
        # A request after the change takes the new snapshot while the first is in flight: at capacity.
        assert (await lonely.http.post("/api/v1/data/slow", json={"data": {}})).status_code == 503
        assert (await first).status_code == 504
        assert service._policies["slow"].in_flight.n == 0
    third = asyncio.create_task(lonely.http.post("/api/v1/data/slow", json={"data": {}}))
    assert (await third).status_code == 504  # admitted (no worker answers), not 503 at capacity


async def test_a_guard_hook_can_answer_before_the_kafka_round_trip(lonely: Gateway) -> None:
    r = await lonely.http.post("/api/v1/data/slow", json={"data": {"a": 1}}, headers={"x-cached": "1"})
    assert r.status_code == 200
    assert r.json() == {"cached": "slow", "data": {"a": 1}}


async def test_async_submission_needs_no_worker_and_is_pending(lonely: Gateway) -> None:
    r = await lonely.http.post("/api/v1/data/slow/async", json={"data": {}})
    assert r.status_code == 202
    trace = (await lonely.http.get(f"/api/v1/data/traces/{r.json()['trace_id']}")).json()
    assert trace["status"] == "pending" and trace["mode"] == "async" and trace["channel"] == "slow"


def test_reply_partitions_are_stable_per_instance_and_within_the_topic() -> None:
    assert choose_partitions("gw-a", 8) == choose_partitions("gw-a", 8)
    assert all(0 <= p < 8 for name in ("a", "b", "c", "d") for p in choose_partitions(name, 8, 3))
    assert len(set(choose_partitions("x", 8, 3))) == 3
    assert sorted(choose_partitions("x", 2, 5)) == [0, 1]  # never more partitions than the topic has
    with pytest.raises(ValueError):
        choose_partitions("x", 0)
