"""Flow and schedule documents: every problem reported with a path, all at once."""

from __future__ import annotations

from typing import Any

import pytest

from app.flows import FlowInvalid, compile_flow, compile_schedule


def problems(doc: dict[str, Any]) -> dict[str, str]:
    with pytest.raises(FlowInvalid) as caught:
        compile_flow(doc)
    assert caught.value.status == 400
    return {e["field"]: e["message"] for e in caught.value.errors}


def doc(*steps: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"id": "f", "name": "F", "steps": list(steps), **extra}


def test_a_valid_flow_compiles_with_its_step_order() -> None:
    flow = compile_flow(
        doc(
            {"id": "a", "type": "delay", "delay": {"duration": "1h"}},
            {
                "id": "b",
                "type": "external_task",
                "handler": "mail.send",
                "timeout": "30s",
                "retry": {"max_attempts": 3},
            },
        )
    )
    assert flow.order == ["a", "b"]
    assert flow.following("a") == "b" and flow.following("b") is None
    assert flow.timeout == {"b": 30.0}
    assert flow.retry_of("b").max_attempts == 3 and flow.retry_of("a").max_attempts == 1


def test_structure_errors_name_the_field() -> None:
    found = problems(doc({"id": "a", "type": "teleport"}, {"id": "b", "type": "delay", "delay": {}}))
    assert "steps[0]" in found
    assert found["steps[1].delay"].endswith("a delay needs exactly one of duration, until, until_logic")
    assert "steps" in problems(doc())
    assert problems(
        {"id": "f", "name": "F", "steps": [{"id": "a", "type": "delay", "delay": {"duration": "1s"}, "typo": 1}]}
    ) == {"steps[0].typo": "Extra inputs are not permitted"}


def test_semantic_errors_are_all_reported() -> None:
    found = problems(
        doc(
            {"id": "a", "type": "delay", "delay": {"duration": "soon", "timezone": "Nowhere/City"}},
            {"id": "a", "type": "wait_for_signal", "signal": "x", "on_timeout": "missing"},
            {"id": "r", "type": "router", "branches": [{"condition": {"==": [1]}, "next": "a"}], "default": "nowhere"},
            {"id": "t", "type": "task", "function": {"name": "no_such_function"}},
            {"id": "m", "type": "task", "function": {"name": "map", "input": {}}},
            {"id": "c", "type": "call_flow", "flow_id": "f", "version": 1},
            {"id": "bd", "type": "delay", "delay": {"duration": "36h", "business_days": {}}},
        )
    )
    assert found["steps[0].delay.duration"].startswith("not a duration: 'soon'")
    assert found["steps[0].delay.timezone"] == "unknown timezone: 'Nowhere/City'"
    assert found["steps[1].id"] == "duplicate step id 'a' (also steps[0])"
    assert found["steps[1].on_timeout"] in {
        "on_timeout needs a timeout",
        "unknown step 'missing' (targets must be top-level step ids)",
    }
    assert found["steps[2].branches[0].condition"].startswith("invalid JSONLogic")
    assert found["steps[2].default"].startswith("unknown step 'nowhere'")
    assert found["steps[3].function.name"].startswith("unknown function 'no_such_function'")
    assert "steps[4].function.input.mappings" in found
    assert found["steps[5].flow_id"] == "a flow cannot call itself"
    assert found["steps[6].delay.duration"] == "with business_days, a duration is whole days (e.g. 3d)"


def test_nested_waits_cannot_jump_and_nested_ids_must_be_unique() -> None:
    found = problems(
        doc(
            {"id": "x", "type": "delay", "delay": {"duration": "1s"}},
            {
                "id": "p",
                "type": "parallel",
                "steps": [
                    {"id": "x", "type": "delay", "delay": {"duration": "1s"}},
                    {"id": "w", "type": "wait_for_signal", "signal": "s", "timeout": "1m", "on_timeout": "x"},
                ],
            },
        )
    )
    assert found["steps[1].steps[0].id"] == "duplicate step id 'x' (also steps[0])"
    assert found["steps[1].steps[1].on_timeout"].startswith("a wait inside for_each/parallel cannot jump")


def test_not_an_object() -> None:
    with pytest.raises(FlowInvalid, match="must be a JSON object"):
        compile_flow([1, 2])  # type: ignore[arg-type]


def test_schedules_validate_cron_timezone_and_horizon() -> None:
    schedule = compile_schedule(
        {"id": "daily", "name": "D", "cron": "0 9 * * MON-FRI", "timezone": "Europe/Berlin", "flow_id": "f"}
    )
    assert schedule.doc.overlap == "skip" and schedule.catch_up == 0
    with pytest.raises(FlowInvalid) as caught:
        compile_schedule(
            {"id": "bad", "name": "B", "cron": "0 25 * * *", "timezone": "UTC", "flow_id": "f", "catch_up": "forever"}
        )
    assert {e["field"] for e in caught.value.errors} == {"cron", "catch_up"}
    with pytest.raises(FlowInvalid) as caught:
        compile_schedule(
            {
                "id": "bad",
                "name": "B",
                "cron": "0 9 * * *",
                "timezone": "Atlantis/Capital",
                "flow_id": "f",
                "overlap": "maybe",
            }
        )
    assert {e["field"] for e in caught.value.errors} == {"overlap"}
