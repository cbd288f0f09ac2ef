"""Flows on the real broker: runners own partitions, timers fire once, signals and external workers."""

from __future__ import annotations

import orjson

from app.flows.clock import VirtualClock
from app.flows.instance import SignalEvent
from app.settings import Settings
from tests.flows.runtime_support import FlowEnv, until


def reminder(flow_id: str, delay: str = "3d") -> dict[str, object]:
    return {
        "flow_id": flow_id,
        "name": "Reminder",
        "steps": [
            {
                "id": "mark",
                "type": "task",
                "function": {"name": "map", "input": {"mappings": [{"path": "data.seen", "logic": True}]}},
            },
            {"id": "wait", "type": "delay", "delay": {"duration": delay}},
            {"id": "approve", "type": "wait_for_signal", "signal": "approved"},
        ],
    }


async def test_an_instance_runs_its_steps_with_a_virtual_clock(settings: Settings) -> None:
    clock = VirtualClock()
    async with FlowEnv(settings) as env:
        await env.flow(reminder("r1"))
        await env.runner(clock=clock)
        await env.start("r1", "i-1", {"customer": "c1"})
        waiting = await env.wait("i-1", "waiting")
        assert waiting.context["data"] == {"customer": "c1", "seen": True}
        assert list(waiting.timers) == ["delay:wait"]
        clock.advance(3 * 86400)  # three days pass in a test
        state = await env.view.wait_for("i-1", lambda s: s.cursor == "approve", 30)
        assert state is not None and state.status == "waiting"
        await env.client.send(
            SignalEvent(instance_id="i-1", signal_id="s1", signal="custom", name="approved", payload={"by": "ana"})
        )
        done = await env.wait("i-1", "completed")
        assert done.outputs["approve"] == {"by": "ana"}
        events = [e["event"] for e in done.timeline]
        assert events.count("timer_fired") == 1


async def test_idempotent_start_keeps_the_first_instance(settings: Settings) -> None:
    async with FlowEnv(settings) as env:
        await env.flow(reminder("r2"))
        await env.runner()
        await env.start("r2", "same", {"n": 1})
        await env.start("r2", "same", {"n": 2})
        # Events of one instance are applied in order: once this patch shows, the second start was seen.
        patch = SignalEvent(instance_id="same", signal_id="u", signal="update_context", payload={"patched": True})
        await env.client.send(patch)
        state = await env.view.wait_for("same", lambda s: s.context["data"].get("patched") is True, 60)
        assert state is not None and state.context["data"]["n"] == 1
        assert [e["event"] for e in state.timeline].count("started") == 1


async def test_task_steps_call_connectors_like_workflows_do(settings: Settings) -> None:
    from app.config_store import Put
    from tests.connectors.servers import HttpTestServer

    upstream = await HttpTestServer().start()
    try:
        async with FlowEnv(settings) as env:
            connector = {
                "name": "api",
                "connector_type": "http",
                "config": {"url": upstream.url, "allow_private_urls": True, "retry": {"max_retries": 0}},
            }
            await env.writer.apply("connector", "api", Put(connector))
            call = {
                "name": "http_call",
                "input": {"connector": "api", "path": "/echo/x", "response_path": "data.reply"},
            }
            await env.flow(
                {"flow_id": "calls", "name": "Calls", "steps": [{"id": "call", "type": "task", "function": call}]}
            )
            await env.runner()
            await env.start("calls", "c-1")
            done = await env.wait("c-1", "completed")
            assert done.context["data"]["reply"]["path"] == "/echo/x"
            assert upstream.hits["/echo/x"] == 1
    finally:
        await upstream.stop()


async def test_a_state_too_large_for_the_broker_parks_the_event_and_the_instance_goes_on(settings: Settings) -> None:
    from app.worker.dlq import list_dlq

    async with FlowEnv(settings) as env:
        await env.flow(reminder("big", delay="1h"))
        await env.runner()
        await env.start("big", "b-1")
        await env.wait("b-1", "waiting")
        blob = "x" * (settings.max_record_bytes * 6 // 10)
        for n, name in enumerate(("first", "second")):  # together past the record budget (message.max.bytes)
            patch = SignalEvent(instance_id="b-1", signal_id=f"u{n}", signal="update_context", payload={name: blob})
            await env.client.send(patch)
        await env.client.send(
            SignalEvent(instance_id="b-1", signal_id="small", signal="update_context", payload={"ok": 1})
        )
        state = await env.view.wait_for("b-1", lambda s: s.context["data"].get("ok") == 1, 60)
        assert state is not None and "first" in state.context["data"] and "second" not in state.context["data"]
        parked = [e for e in list_dlq(settings) if e.code == "FLOW_EVENT_FAILED"]
        assert len(parked) == 1 and "MSG_SIZE_TOO_LARGE" in parked[0].message, parked


async def test_a_worker_result_too_large_to_become_an_event_is_parked_and_the_runner_goes_on(
    settings: Settings,
) -> None:
    # Review finding: the runner re-wraps an external worker's result as an event; one too large for the
    # producer raised out of the runner, which (inside `quasar worker`) stopped every channel, on every restart.
    from confluent_kafka import Producer

    from app.kafka.config import producer_config
    from app.kafka.producer import produce_sync
    from app.worker.dlq import list_dlq

    flow = {
        "flow_id": "ext",
        "name": "ext",
        "steps": [
            {"id": "work", "type": "external_task", "handler": "big-worker", "input": {"var": "data"}, "timeout": "1h"},
        ],
    }
    async with FlowEnv(settings) as env:
        await env.flow(flow)
        runner = await env.runner()
        await env.start("ext", "x-1")
        await env.wait("x-1", "waiting")
        big = Producer(producer_config(settings, **{"message.max.bytes": 3 * settings.max_record_bytes}))
        result = {
            "task_id": "t",
            "instance_id": "x-1",
            "step": "work",
            "attempt": 1,
            "status": "completed",
            "output": "x" * (settings.max_record_bytes + 10_000),  # fits the raw record, not the event around it
        }
        produce_sync(big, env.names.flow_results, orjson.dumps(result), b"x-1")
        parked = await until(
            lambda: [e for e in list_dlq(settings) if e.code == "TASK_RESULT_UNDELIVERABLE"],
            within=60,
            what="the oversized result dead-lettered",
        )
        assert "MSG_SIZE_TOO_LARGE" in parked[0].message
        assert runner.status() == "ok"  # still running: a later signal to the instance is applied
        await env.client.send(SignalEvent(instance_id="x-1", signal_id="c", signal="cancel"))
        await env.wait("x-1", "cancelled")
