"""The gateway's instance view is bounded: finished instances are kept up to a count, bytes and an age,
least recently written or read first out; running ones are always kept (real runner, broker, gateway)."""

from __future__ import annotations

import asyncio

from app.flows.instance import SignalEvent
from tests.fixtures.kafka import make_test_settings
from tests.flows.runtime_support import FlowEnv
from tests.gateway.conftest import start_gateway

QUICK = {"flow_id": "quick", "name": "Ends at once", "steps": [{"id": "end", "type": "terminal", "output": 1}]}
WAITS = {
    "flow_id": "waits",
    "name": "Waits for a signal",
    "steps": [{"id": "hold", "type": "wait_for_signal", "signal": "go", "timeout": "1h"}],
}


async def _finish(env: FlowEnv, instance_id: str) -> None:
    await env.start("quick", instance_id)
    await env.wait(instance_id, "completed")


async def test_finished_instances_are_kept_up_to_the_count_least_recently_used_first(kafka_bootstrap: str) -> None:
    settings = make_test_settings(kafka_bootstrap, flow_view_max_finished=3)
    async with FlowEnv(settings) as env:
        await env.flow(QUICK)
        await env.flow(WAITS)
        await env.runner()
        await env.start("waits", "running-1")
        await env.wait("running-1", "waiting")
        for n in range(1, 5):
            await _finish(env, f"q-{n}")
        view = env.view
        assert sorted(s.id for s in view.find(flow_id="quick")) == ["q-2", "q-3", "q-4"]
        assert view.evicted == 1 and view.get("q-1") is None

        assert view.get("q-2") is not None  # read: now the most recently used
        await _finish(env, "q-5")
        assert sorted(s.id for s in view.find(flow_id="quick")) == ["q-2", "q-4", "q-5"]  # q-3 went, not q-2
        assert view.get("running-1") is not None  # running instances are never evicted

        gateway = await start_gateway(settings)  # a fresh view: the same bound while reading the history
        try:
            listed = (await gateway.http.get("/api/v1/instances", params={"limit": 2})).json()
            assert listed["total"] == 4 and len(listed["data"]) == 2  # 3 finished + 1 running, paginated
            page2 = (await gateway.http.get("/api/v1/instances", params={"limit": 2, "offset": 2})).json()
            assert {r["id"] for r in listed["data"] + page2["data"]} == {"q-3", "q-4", "q-5", "running-1"}
            gone = await gateway.http.get("/api/v1/instances/q-1")
            assert gone.status_code == 404 and "no longer kept" in gone.json()["error"]["message"]
            assert (await gateway.http.get("/api/v1/instances/q-5")).status_code == 200

            # the running one finishes: it joins the finished ones and the oldest of them leaves
            await env.client.send(SignalEvent(instance_id="running-1", signal_id="s1", signal="custom", name="go"))
            await env.wait("running-1", "completed")
            assert {s.id for s in env.view.find()} == {"q-2", "q-5", "running-1"}
        finally:
            await gateway.stop()


async def test_finished_instances_are_bounded_by_bytes_and_age(kafka_bootstrap: str) -> None:
    settings = make_test_settings(kafka_bootstrap, flow_view_max_finished_bytes=1, flow_view_finished_ttl_secs=0)
    async with FlowEnv(settings) as env:
        await env.flow(QUICK)
        await env.flow(WAITS)
        await env.runner()
        await env.start("waits", "held")
        await env.wait("held", "waiting")
        await _finish(env, "tiny")  # its record alone is over the byte bound
        assert env.view.get("tiny") is None and env.view.finished_bytes == 0
        assert env.view.get("held") is not None

    aged = make_test_settings(kafka_bootstrap, flow_view_finished_ttl_secs=0.5)
    async with FlowEnv(aged) as env:
        await env.flow(QUICK)
        await env.runner()
        await _finish(env, "old")
        assert env.view.get("old") is not None
        await asyncio.sleep(0.6)  # past the age bound (a lower bound: it cannot be too short)
        assert [s.id for s in env.view.find()] == [] and env.view.evicted == 1
