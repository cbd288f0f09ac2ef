"""The instance API through a real gateway, a real runner and the real broker; SSE shows each step live."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from app.settings import Settings
from tests.flows.runtime_support import FlowEnv
from tests.gateway.conftest import start_gateway

APPROVAL = {
    "flow_id": "approval",
    "name": "Approval",
    "steps": [
        {
            "id": "mark",
            "type": "task",
            "function": {"name": "map", "input": {"mappings": [{"path": "data.asked", "logic": True}]}},
        },
        {"id": "decide", "type": "wait_for_signal", "signal": "decision", "timeout": "1h"},
        {"id": "pause", "type": "delay", "delay": {"duration": "200ms"}},
        {"id": "end", "type": "terminal", "output": {"var": "outputs.decide"}},
    ],
}


def body(resp: Any, status: int) -> Any:
    assert resp.status_code == status, resp.text
    return resp.json()


async def read_sse(lines: Any, seen: list[dict[str, Any]], ready: asyncio.Event) -> None:
    event = ""
    async for line in lines:
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            seen.append({"event": event, "data": orjson.loads(line[6:])})
            if event == "status":
                ready.set()
            if event == "end":
                return


async def test_start_signal_stream_and_read_an_instance(settings: Settings) -> None:
    async with FlowEnv(settings) as env:
        await env.flow(APPROVAL)
        await env.runner()
        gateway = await start_gateway(settings)
        http = gateway.http
        try:
            started = body(await http.post("/api/v1/flows/approval/instances", json={"data": {"order": 7}}), 202)[
                "data"
            ]
            instance_id = started["id"]
            await env.wait(instance_id, "waiting")

            seen: list[dict[str, Any]] = []
            ready = asyncio.Event()
            async with http.stream("GET", f"/api/v1/instances/{instance_id}/stream") as stream:
                assert stream.headers["content-type"].startswith("text/event-stream")
                reader = asyncio.create_task(read_sse(stream.aiter_lines(), seen, ready))
                await asyncio.wait_for(ready.wait(), 30)  # the current state arrived: now act
                signal = {"signal": "custom", "name": "decision", "payload": {"approved": True}}
                body(await http.post(f"/api/v1/instances/{instance_id}/signals", json=signal), 202)
                await asyncio.wait_for(reader, 60)
            steps = [(e["data"]["event"], e["data"].get("step")) for e in seen if e["event"] == "step"]
            # every step as it happened, in order, ending with the final state
            for expected in [
                ("started", None),
                ("step_completed", "mark"),
                ("step_started", "decide"),
                ("signal", None),
                ("step_completed", "decide"),
                ("step_started", "pause"),
                ("timer_fired", None),
                ("step_completed", "pause"),
                ("terminal", "end"),
                ("completed", None),
            ]:
                assert expected in steps, (expected, steps)
            assert steps.index(("signal", None)) < steps.index(("timer_fired", None)) < steps.index(("completed", None))
            assert seen[-1]["event"] == "end" and seen[-1]["data"]["output"] == {"approved": True}

            got = body(await http.get(f"/api/v1/instances/{instance_id}"), 200)["data"]
            assert got["status"] == "completed" and got["outputs"]["mark"] == {"status": 200}
            listed = body(await http.get("/api/v1/instances", params={"flow_id": "approval"}), 200)
            assert [i["id"] for i in listed["data"]] == [instance_id]

            late = await http.post(f"/api/v1/instances/{instance_id}/signals", json={"signal": "cancel"})
            assert late.status_code == 409 and late.json()["error"]["code"] == "CONFLICT"
        finally:
            await gateway.stop()


async def test_sync_wait_idempotency_and_clear_errors(settings: Settings) -> None:
    quick = {
        "flow_id": "quick",
        "name": "Quick",
        "steps": [{"id": "d", "type": "delay", "delay": {"duration": "100ms"}}],
    }
    async with FlowEnv(settings) as env:
        await env.flow(quick)
        await env.runner()
        gateway = await start_gateway(settings)
        http = gateway.http
        try:
            request = {"data": {"a": 1}, "idempotency_key": "order-1", "wait_ms": 30000}
            done = body(await http.post("/api/v1/flows/quick/instances", json=request), 200)["data"]
            assert done["status"] == "completed" and done["id"] == "quick:order-1" and done["output"] == {"a": 1}
            again = body(await http.post("/api/v1/flows/quick/instances", json={**request, "data": {"a": 2}}), 200)
            assert again["data"]["id"] == "quick:order-1" and again["data"]["output"] == {"a": 1}

            assert (await http.post("/api/v1/flows/nope/instances", json={})).status_code == 404
            assert (await http.get("/api/v1/instances/nope")).status_code == 404
            bad_json = await http.post(
                "/api/v1/flows/quick/instances", content=b"{", headers={"content-type": "application/json"}
            )
            assert bad_json.status_code == 400 and bad_json.json()["error"]["code"] == "BAD_REQUEST"
            unknown_field = await http.post("/api/v1/flows/quick/instances", json={"dta": {}})
            assert unknown_field.status_code == 400 and "dta" in unknown_field.text
            bad_signal = await http.post("/api/v1/instances/quick:order-1/signals", json={"signal": "explode"})
            assert bad_signal.status_code == 400 and "signal must be one of" in bad_signal.text
        finally:
            await gateway.stop()
