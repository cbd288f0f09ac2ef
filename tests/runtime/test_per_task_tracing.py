"""Per-task tracing (`config.tracing.per_task`) in the worker's record pipeline, without a broker: the trace
record carries each executed task (id, function, status, duration, changed fields old -> new), bounded; with
it off the trace record is what it always was."""

from __future__ import annotations

import dataclasses
from typing import Any

import orjson

from app.worker.pipeline import MAX_TRAIL_VALUE_BYTES, WorkerView
from tests.runtime.test_worker_pipeline import (
    MAP,
    NAMES,
    TOPIC,
    Calls,
    _by_topic,
    _pipeline,
    _record,
    _task,
    _view,
    clock,
)

FLAG = _task("flag", "map", {"mappings": [{"path": "data.got.seen", "logic": True}]})


def _per_task(view: WorkerView, on: bool = True) -> WorkerView:
    (route,) = view.routes.values()
    view.routes[TOPIC] = dataclasses.replace(route, per_task=on)  # type: ignore[index]
    return view


def _trace(outcome: Any) -> dict[str, Any]:
    doc = orjson.loads(_by_topic(outcome)[NAMES.traces][1])
    assert isinstance(doc, dict)
    return doc


async def test_a_per_task_trace_carries_each_executed_task_and_what_it_changed() -> None:
    view = _per_task(_view([MAP, FLAG]))
    out = await _pipeline().handle(_record({"order_id": "K-1"}), view, clock)
    assert out.status == "ok"
    trail = _trace(out)["audit_trail"]
    assert [(e["task_id"], e["function"], e["status"]) for e in trail] == [
        ("copy", "parse_json", 200),
        ("flag", "map", 200),
    ]
    assert trail[0]["workflow_id"] == "wf"
    # As it was after `copy`, although `flag` then added a field to the same object in place.
    assert trail[0]["changes"] == [{"path": "data.got", "old_value": None, "new_value": {"order_id": "K-1"}}]
    assert trail[1]["changes"][0]["path"] == "data.got.seen" and trail[1]["changes"][0]["new_value"] is True
    for entry in trail:
        assert isinstance(entry["duration_ms"], float) and entry["duration_ms"] >= 0
        assert entry["timestamp"].endswith("Z")


async def test_without_per_task_the_trace_has_no_audit_trail() -> None:
    out = await _pipeline().handle(_record({"order_id": "K-1"}), _per_task(_view([MAP, FLAG]), False), clock)
    trace = _trace(out)
    assert out.status == "ok" and "audit_trail" not in trace and "audit_trail_omitted" not in trace
    assert trace["result"]["data"]["got"]["seen"] is True


async def test_a_failed_per_task_trace_shows_the_tasks_up_to_the_failure() -> None:
    calls = Calls()
    calls.fail["charge"] = ValueError("card declined")
    view = _per_task(_view([MAP, _task("pay", "charge")], calls=calls))
    out = await _pipeline().handle(_record({"order_id": "K-2"}), view, clock)
    assert out.status == "dlq"
    trace = _trace(out)
    assert trace["status"] == "failed" and trace["error"]["task_id"] == "pay"
    assert [(e["task_id"], e["function"], e["status"]) for e in trace["audit_trail"]] == [
        ("copy", "parse_json", 200),
        ("pay", "charge", 500),
    ]


async def test_a_large_value_is_replaced_by_a_truncation_marker() -> None:
    big = "x" * (MAX_TRAIL_VALUE_BYTES * 4)
    out = await _pipeline().handle(_record({"blob": big}), _per_task(_view([MAP])), clock)
    (entry,) = _trace(out)["audit_trail"]
    marker = entry["changes"][0]["new_value"]
    assert marker["_truncated"] is True and marker["bytes"] > MAX_TRAIL_VALUE_BYTES
    assert big.startswith(marker["preview"].split('"blob":"', 1)[1])
    assert _trace(out)["result"]["data"]["got"]["blob"] == big  # the result itself is whole


async def test_a_trail_past_the_room_left_by_the_result_is_cut_with_a_count_and_the_record_fits() -> None:
    many = [_task(f"t{i}", "map", {"mappings": [{"path": f"data.n{i}", "logic": i}]}) for i in range(400)]
    view = _per_task(_view([MAP, *many]))
    budget = 1_000_000  # a record budget (QUASAR_MAX_RECORD_BYTES) the 900 kB result nearly fills
    out = await _pipeline(max_produce_bytes=budget).handle(_record({"blob": "y" * 900_000}), view, clock)
    assert out.status == "ok"
    for _topic, value, _key, headers, _ in out.records:
        assert len(value or b"") + sum(len(k) + len(v or b"") for k, v in headers or []) <= budget
    trace = _trace(out)
    kept = len(trace["audit_trail"])
    assert 0 < kept < 401 and trace["audit_trail_omitted"] == 401 - kept
    assert trace["audit_trail"][0]["changes"][0]["new_value"]["_truncated"] is True
