"""Workflow selection and execution rules (Orion §1b, §1e, §1f)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Any

import pytest

from app.engine import (
    AsyncFunction,
    ChannelWorkflow,
    Engine,
    FunctionSpec,
    Message,
    RunOptions,
    TaskContext,
    compile_workflow,
    default_registry,
    rollout_bucket,
)
from app.errors import CircuitOpen, EngineFailure, NotFound, Timeout, ValidationFailed
from tests.engine._support import mapping, run, task, workflow


def test_all_matching_workflows_run_in_ascending_priority() -> None:
    a = workflow("a", mapping("m", ("data.order", {"cat": [{"var": "data.order"}, "a"]})), priority=5)
    b = workflow("b", mapping("m", ("data.order", {"cat": [{"var": "data.order"}, "b"]})), priority=1)
    c = workflow("c", mapping("m", ("data.order", {"cat": [{"var": "data.order"}, "c"]})), priority=5)
    assert run(a, b, c).data == {"order": "bac"}  # stable for equal priorities


def test_workflow_condition_must_be_exactly_true_and_sees_current_context() -> None:
    first = workflow("first", mapping("m", ("data.flag", True)))
    gated = workflow("gated", mapping("m", ("data.ran", True)), priority=1, condition={"var": "data.flag"})
    truthy = workflow("truthy", mapping("m", ("data.truthy", True)), priority=2, condition=1)
    broken = workflow("broken", mapping("m", ("data.broken", True)), priority=3, condition={"/": [1, 0]})
    assert run(first, gated, truthy, broken).data == {"flag": True, "ran": True}


def test_workflow_conditions_run_before_parse_and_see_empty_data_quirk_1() -> None:
    wf = workflow("w", mapping("m", ("data.ran", True)), condition={">": [{"var": "data.total"}, 1]})
    assert run(wf, data={"total": 5}).data == {}


def test_task_condition_gates_each_task() -> None:
    wf = workflow("w", mapping("yes", ("data.a", 1), condition=True), mapping("no", ("data.b", 1), condition=False))
    msg = run(wf)
    assert msg.data == {"a": 1} and [a.task_id for a in msg.audit_trail] == ["yes"]


def test_metadata_gets_processed_at_engine_version_channel_and_progress() -> None:
    msg = run(workflow("w", mapping("m", ("data.a", 1))), metadata={"k": "v"})
    meta = msg.metadata
    assert meta["k"] == "v" and meta["channel"] == "ch" and meta["engine_version"]
    assert meta["processed_at"].endswith("Z")
    assert meta["progress"] == {"workflow_id": "w", "task_id": "m", "status_code": 200}


def test_audit_trail_entry_shape() -> None:
    entry = run(workflow("w", mapping("m", ("data.a", 1)))).to_dict()["audit_trail"][0]
    assert set(entry) == {"workflow_id", "task_id", "timestamp", "changes", "status"}
    assert entry["changes"] == [{"path": "data.a", "old_value": None, "new_value": 1}]


def _failing(**extra: Any) -> dict[str, Any]:
    return task("bad", "publish_json", {"source": "missing", "target": "x"}, **extra)


def test_task_error_fails_the_request_with_the_function_error() -> None:
    engine = Engine({"ch": [compile_workflow(workflow("w", _failing()))]})
    with pytest.raises(ValidationFailed):
        engine.process_sync("ch", Message.from_request({}))


def test_task_continue_on_error_records_task_error_and_goes_on() -> None:
    msg = run(workflow("w", _failing(continue_on_error=True), mapping("next", ("data.next", 1))))
    assert msg.data == {"next": 1}
    err = msg.errors[0]
    assert (err["code"], err["workflow_id"], err["task_id"]) == ("TASK_ERROR", "w", "bad")
    assert err["message"].startswith("Task bad error: PublishJson")
    assert [a.status for a in msg.audit_trail] == [500, 200]


def test_workflow_continue_on_error_records_workflow_error_skips_rest_and_runs_next_workflow_quirk_4() -> None:
    a = workflow("a", _failing(), mapping("rest", ("data.rest", 1)), continue_on_error=True)
    b = workflow("b", mapping("m", ("data.b", 1)), priority=1)
    msg = run(a, b)
    assert msg.data == {"b": 1}
    assert [e["code"] for e in msg.errors] == ["TASK_ERROR", "WORKFLOW_ERROR"]
    assert msg.errors[1]["message"].startswith("Workflow a error:")


def test_unknown_channel_is_not_found() -> None:
    with pytest.raises(NotFound):
        Engine({}).process_sync("nope", Message.from_request({}))


def test_channel_without_workflows_answers_empty_data() -> None:
    msg = Engine({"empty": []}).process_sync("empty", Message.from_request({"a": 1}))
    assert msg.to_response()["data"] == {}


def test_rollout_ranges_pick_exactly_one_version_and_never_touch_data() -> None:
    old = compile_workflow(workflow("w", mapping("m", ("data.v", 1))))
    new = compile_workflow(workflow("w2", mapping("m", ("data.v", 2))))
    engine = Engine({"ch": [ChannelWorkflow(new, (0, 10)), ChannelWorkflow(old, (10, 100))]})
    seen = {}
    for bucket in (0, 9, 10, 99):
        msg = engine.process_sync("ch", Message.from_request({}), RunOptions(rollout_bucket=bucket))
        seen[bucket] = msg.data
    assert seen == {0: {"v": 2}, 9: {"v": 2}, 10: {"v": 1}, 99: {"v": 1}}


def test_rollout_bucket_is_sticky_and_spread() -> None:
    assert rollout_bucket("user-1") == rollout_bucket(b"user-1")
    buckets = [rollout_bucket(f"k{i}") for i in range(5000)]
    assert all(0 <= b < 100 for b in buckets)
    in_first_ten = sum(b < 10 for b in buckets) / len(buckets)
    assert 0.08 < in_first_ten < 0.12


def test_rollout_range_is_validated() -> None:
    wf = compile_workflow(workflow("w", mapping("m", ("data.v", 1))))
    with pytest.raises(ValueError):
        ChannelWorkflow(wf, (50, 10))


def test_deadline_in_the_past_times_out_with_504() -> None:
    engine = Engine({"ch": [compile_workflow(workflow("w", mapping("m", ("data.v", 1))))]})
    with pytest.raises(Timeout) as info:
        engine.process_sync("ch", Message.from_request({}), RunOptions(deadline=time.time() - 1))
    assert info.value.status == 504


class _Sleepy(AsyncFunction):
    def __init__(self, value: Any, error: Exception | None = None) -> None:
        self.value = value
        self.error = error

    async def arun(self, message: Message, ctx: TaskContext) -> int:
        await asyncio.sleep(0)
        if self.error:
            raise self.error
        message.data["async"] = self.value
        message.data["service"] = ctx.services
        return 200


def _registry() -> Any:
    reg = default_registry()

    def factory(inp: Mapping[str, Any]) -> _Sleepy:
        return _Sleepy(inp.get("value"), CircuitOpen("open") if inp.get("trip") else None)

    reg.register(FunctionSpec("sleepy", factory, side_effects=True))
    return reg


async def test_async_functions_are_awaited_and_get_services() -> None:
    reg = _registry()
    wf = compile_workflow(workflow("w", task("s", "sleepy", {"value": 3}), mapping("m", ("data.after", 1))), reg)
    engine = Engine({"ch": [wf]})
    assert not engine.is_sync("ch")
    msg = await engine.process("ch", Message.from_request({}), RunOptions(services="svc"))
    assert msg.data == {"async": 3, "service": "svc", "after": 1}
    with pytest.raises(RuntimeError):
        engine.process_sync("ch", Message.from_request({}))


async def test_runtime_errors_with_their_own_status_pass_through() -> None:
    reg = _registry()
    engine = Engine({"ch": [compile_workflow(workflow("w", task("s", "sleepy", {"trip": True})), reg)]})
    with pytest.raises(CircuitOpen):
        await engine.process("ch", Message.from_request({}))


async def test_connector_function_without_runtime_gives_a_clear_engine_failure() -> None:
    t = task("h", "http_call", {"connector": "payments"}, continue_on_error=True)
    engine = Engine({"ch": [compile_workflow(workflow("w", t))]})
    msg = await engine.process("ch", Message.from_request({}))
    assert "function http_call needs a connector runtime" in msg.errors[0]["message"]
    engine2 = Engine({"ch": [compile_workflow(workflow("w", task("h", "http_call", {"connector": "p"})))]})
    with pytest.raises(EngineFailure) as info:
        await engine2.process("ch", Message.from_request({}))
    assert info.value.message == "An internal engine error occurred"
    assert "needs a connector runtime" in str(info.value.__cause__)
