"""Issue 15, per-task tracing (`config.tracing.per_task`, Orion v0.2.0+) end to end: real HTTP -> gateway ->
Kafka -> worker -> trace topic -> `GET /api/v1/data/traces/{id}`, on the real broker."""

from __future__ import annotations

from typing import Any

import pytest

from tests.gateway.conftest import Admin, Gateway, eventually, map_task, parse_task

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
async def channels(admin: Admin) -> None:
    await admin.workflow(
        {
            "workflow_id": "per-task-wf",
            "name": "per task",
            "tasks": [parse_task("order"), map_task("flag", ("data.order.seen", True))],
        }
    )
    await admin.channel(
        {
            "channel_id": "per-task",
            "name": "per-task",
            "workflow_id": "per-task-wf",
            "config": {"tracing": {"per_task": True}},
        }
    )
    await admin.channel({"channel_id": "no-per-task", "name": "no-per-task", "workflow_id": "per-task-wf"})


async def _completed_trace(gateway: Gateway, channel: str, data: Any) -> dict[str, Any]:
    r = await gateway.http.post(f"/api/v1/data/{channel}/async", json={"data": data})
    assert r.status_code == 202, r.text
    trace_id = r.json()["trace_id"]

    async def completed() -> Any:
        t = await gateway.http.get(f"/api/v1/data/traces/{trace_id}")
        return t.json() if t.status_code == 200 and t.json()["status"] == "completed" else None

    trace: dict[str, Any] = await eventually(completed)
    return trace


async def test_a_per_task_channel_trace_holds_each_task_in_orions_audit_trail(
    gateway: Gateway, worker: Any, channels: None
) -> None:
    trace = await _completed_trace(gateway, "per-task", {"order_id": "ORD-7"})
    trail = trace["message"]["audit_trail"]
    assert [(e["workflow_id"], e["task_id"], e["function"], e["status"]) for e in trail] == [
        ("per-task-wf", "parse", "parse_json", 200),
        ("per-task-wf", "flag", "map", 200),
    ]
    assert trail[0]["changes"] == [{"path": "data.order", "old_value": None, "new_value": {"order_id": "ORD-7"}}]
    assert trail[1]["changes"] == [{"path": "data.order.seen", "old_value": None, "new_value": True}]
    assert all(e["duration_ms"] >= 0 and e["timestamp"] for e in trail)
    assert trace["message"]["context"]["data"] == {"order": {"order_id": "ORD-7", "seen": True}}


async def test_a_channel_without_per_task_keeps_the_trace_lean(gateway: Gateway, worker: Any, channels: None) -> None:
    trace = await _completed_trace(gateway, "no-per-task", {"order_id": "ORD-8"})
    assert trace["message"]["audit_trail"] == [] and "audit_trail" not in trace
    assert trace["message"]["context"]["data"] == {"order": {"order_id": "ORD-8", "seen": True}}
