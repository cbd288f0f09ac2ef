"""The instance state machine, driven through the in-memory runtime on a virtual clock."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.flows import compile_flow
from app.flows.clock import VirtualClock
from app.flows.instance import SignalEvent, StartEvent, StepResultEvent, TimerFiredEvent
from app.flows.local import LocalRuntime
from app.flows.machine import apply, merge_patch

DAY = 86400.0
MONDAY_9_BERLIN = datetime(2026, 1, 5, 8, 0, tzinfo=UTC).timestamp()  # 09:00 CET


def flow(steps: list[dict[str, Any]], flow_id: str = "f", version: int = 1, **extra: Any) -> Any:
    return compile_flow({"id": flow_id, "name": flow_id, "version": version, "steps": steps, **extra})


def map_step(step_id: str, path: str, logic: Any) -> dict[str, Any]:
    return {
        "id": step_id,
        "type": "task",
        "function": {"name": "map", "input": {"mappings": [{"path": path, "logic": logic}]}},
    }


def runtime(*flows: Any, start: float = MONDAY_9_BERLIN) -> LocalRuntime:
    return LocalRuntime(flows, VirtualClock(start))


def events(rt: LocalRuntime, instance_id: str) -> list[str]:
    return [f"{e['event']}:{e.get('step', '')}" for e in rt.states[instance_id].timeline]


# --- delays -------------------------------------------------------------------------------------


async def test_a_three_day_delay_completes_when_the_clock_reaches_it() -> None:
    rt = runtime(
        flow([{"id": "wait", "type": "delay", "delay": {"duration": "3d"}}, map_step("after", "data.done", True)])
    )
    state = await rt.start("f", "i1")
    assert state.status == "waiting"
    assert state.timers == {"delay:wait": MONDAY_9_BERLIN + 3 * DAY}
    await rt.advance(3 * DAY - 1)
    assert rt.states["i1"].status == "waiting"
    await rt.advance(1)
    done = rt.states["i1"]
    assert done.status == "completed"
    assert done.output == {"done": True}
    assert done.outputs["wait"] == {"due": MONDAY_9_BERLIN + 3 * DAY, "fired_at": MONDAY_9_BERLIN + 3 * DAY}
    assert rt.lateness == [0.0]
    assert len(rt.timers) == 0


async def test_delay_until_a_local_timestamp_in_a_timezone() -> None:
    step = {"id": "w", "type": "delay", "delay": {"until": "2026-01-06T09:00:00", "timezone": "America/New_York"}}
    rt = runtime(flow([step]))
    state = await rt.start("f", "i1")
    assert state.timers["delay:w"] == datetime(2026, 1, 6, 14, 0, tzinfo=UTC).timestamp()


async def test_delay_until_a_computed_time_and_a_past_time_goes_on_at_once() -> None:
    step = {
        "id": "w",
        "type": "delay",
        "delay": {"until_logic": {"var": "data.remind_at"}, "timezone": "Europe/Berlin"},
    }
    rt = runtime(flow([step]))
    state = await rt.start("f", "future", {"remind_at": "2026-01-07T10:00:00"})
    assert state.timers["delay:w"] == datetime(2026, 1, 7, 9, 0, tzinfo=UTC).timestamp()
    past = await rt.start("f", "past", {"remind_at": "2025-01-01T00:00:00Z"})
    assert past.status == "completed"


async def test_a_bad_computed_time_fails_the_step_with_the_reason() -> None:
    step = {"id": "w", "type": "delay", "delay": {"until_logic": {"var": "data.when"}}}
    rt = runtime(flow([step]))
    state = await rt.start("f", "i1", {"when": "soon"})
    assert state.status == "failed"
    assert state.error is not None and state.error.code == "INVALID_DELAY"
    assert "ISO 8601" in state.error.message


async def test_business_day_delay_skips_the_weekend_and_holidays() -> None:
    friday_10 = datetime(2026, 1, 9, 9, 0, tzinfo=UTC).timestamp()  # Friday 10:00 Berlin
    calendar = {"holidays": ["2026-01-13"]}
    step = {
        "id": "w",
        "type": "delay",
        "delay": {"duration": "2d", "timezone": "Europe/Berlin", "business_days": calendar},
    }
    rt = runtime(flow([step]), start=friday_10)
    state = await rt.start("f", "i1")
    # Mon 12th counts, Tue 13th is a holiday, Wed 14th counts.
    assert state.timers["delay:w"] == datetime(2026, 1, 14, 9, 0, tzinfo=UTC).timestamp()


async def test_until_on_a_weekend_moves_to_the_next_business_day() -> None:
    step = {
        "id": "w",
        "type": "delay",
        "delay": {"until": "2026-01-10T08:00:00", "timezone": "Europe/Berlin", "business_days": {}},
    }
    rt = runtime(flow([step]))
    state = await rt.start("f", "i1")
    assert state.timers["delay:w"] == datetime(2026, 1, 12, 7, 0, tzinfo=UTC).timestamp()


async def test_jitter_is_bounded_and_the_same_on_replay() -> None:
    compiled = flow([{"id": "w", "type": "delay", "delay": {"duration": "1h", "jitter": "10m"}}])
    dues = []
    for n in range(20):
        start = StartEvent(instance_id=f"i{n}", flow_id="f", flow_version=1)
        first = apply(compiled, None, start, 1000.0).state
        again = apply(compiled, None, start, 1000.0).state
        assert first is not None and again is not None
        assert first.timers == again.timers
        dues.append(first.timers["delay:w"])
    assert all(1000 + 3600 <= d < 1000 + 3600 + 600 for d in dues)
    assert len(set(dues)) == 20


# --- signals --------------------------------------------------------------------------------------


async def test_wait_for_signal_takes_its_payload_as_the_step_output() -> None:
    rt = runtime(flow([{"id": "approve", "type": "wait_for_signal", "signal": "approved", "timeout": "2d"}]))
    await rt.start("f", "i1")
    await rt.signal("i1", "custom", "s1", name="approved", payload={"by": "ana"})
    state = rt.states["i1"]
    assert state.status == "completed"
    assert state.outputs["approve"] == {"by": "ana"}
    assert state.timers == {}


async def test_wait_timeout_takes_the_on_timeout_branch() -> None:
    rt = runtime(
        flow(
            [
                {
                    "id": "approve",
                    "type": "wait_for_signal",
                    "signal": "approved",
                    "timeout": "2d",
                    "on_timeout": "escalate",
                },
                {"id": "ok", "type": "terminal"},
                map_step("escalate", "data.escalated", True),
            ]
        )
    )
    await rt.start("f", "i1")
    await rt.advance(2 * DAY)
    state = rt.states["i1"]
    assert state.status == "completed"
    assert state.outputs["approve"] == {"timed_out": True}
    assert state.output == {"escalated": True}
    # A signal after the timeout is refused: the instance is finished.
    await rt.signal("i1", "custom", "late", name="approved")
    assert [r.reason for r in rt.rejected] == ["instance is completed"]


async def test_wait_timeout_without_a_branch_fails_the_instance() -> None:
    rt = runtime(flow([{"id": "approve", "type": "wait_for_signal", "signal": "approved", "timeout": "1h"}]))
    await rt.start("f", "i1")
    await rt.advance(3600)
    state = rt.states["i1"]
    assert state.status == "failed"
    assert state.error is not None and state.error.code == "TIMEOUT"


async def test_signals_that_arrive_early_are_kept_in_order() -> None:
    rt = runtime(
        flow(
            [
                {"id": "d", "type": "delay", "delay": {"duration": "1h"}},
                {"id": "first", "type": "wait_for_signal", "signal": "step"},
                {"id": "second", "type": "wait_for_signal", "signal": "step"},
            ]
        )
    )
    await rt.start("f", "i1")
    await rt.signal("i1", "custom", "a", name="step", payload=1)
    await rt.signal("i1", "custom", "b", name="step", payload=2)
    await rt.signal("i1", "custom", "c", name="other", payload=3)
    assert [p.signal_id for p in rt.states["i1"].inbox] == ["a", "b", "c"]
    await rt.advance(3600)
    state = rt.states["i1"]
    assert state.status == "completed"
    assert (state.outputs["first"], state.outputs["second"]) == (1, 2)
    assert [p.signal_id for p in state.inbox] == ["c"]


async def test_a_repeated_signal_is_applied_once() -> None:
    rt = runtime(
        flow(
            [
                {"id": "w", "type": "wait_for_signal", "signal": "x"},
                {"id": "w2", "type": "wait_for_signal", "signal": "x"},
            ]
        )
    )
    await rt.start("f", "i1")
    await rt.signal("i1", "custom", "same-id", name="x", payload=1)
    await rt.signal("i1", "custom", "same-id", name="x", payload=1)
    state = rt.states["i1"]
    assert state.status == "waiting"
    assert state.cursor == "w2"


async def test_pause_holds_the_next_step_and_resume_goes_on() -> None:
    rt = runtime(flow([{"id": "d", "type": "delay", "delay": {"duration": "1h"}}, map_step("after", "data.ran", True)]))
    await rt.start("f", "i1")
    await rt.signal("i1", "pause", "p")
    assert rt.states["i1"].status == "paused"
    await rt.advance(2 * 3600)  # the delay fires while paused: recorded, but the next step waits
    state = rt.states["i1"]
    assert state.status == "paused"
    assert "d" in state.outputs and "after" not in state.outputs
    await rt.signal("i1", "resume", "r")
    state = rt.states["i1"]
    assert state.status == "completed"
    assert state.output == {"ran": True}


async def test_cancel_stops_timers_and_refuses_later_signals() -> None:
    rt = runtime(flow([{"id": "d", "type": "delay", "delay": {"duration": "1d"}}]))
    await rt.start("f", "i1")
    await rt.signal("i1", "cancel", "c")
    state = rt.states["i1"]
    assert state.status == "cancelled"
    assert state.timers == {} and len(rt.timers) == 0
    await rt.signal("i1", "resume", "r")
    assert rt.rejected[-1].reason == "instance is cancelled"
    await rt.advance(2 * DAY)
    assert rt.states["i1"].status == "cancelled"


async def test_update_context_is_a_merge_patch() -> None:
    rt = runtime(flow([{"id": "w", "type": "wait_for_signal", "signal": "go"}, {"id": "end", "type": "terminal"}]))
    await rt.start("f", "i1", {"a": 1, "b": {"c": 2, "d": 3}})
    await rt.signal("i1", "update_context", "u", payload={"b": {"c": 20, "d": None}, "e": 5})
    await rt.signal("i1", "custom", "g", name="go")
    assert rt.states["i1"].output == {"a": 1, "b": {"c": 20}, "e": 5}


async def test_malformed_signals_are_refused_with_a_reason() -> None:
    rt = runtime(flow([{"id": "w", "type": "wait_for_signal", "signal": "go"}]))
    await rt.start("f", "i1")
    await rt.signal("i1", "update_context", "u", payload=[1, 2])
    await rt.signal("i1", "custom", "n")
    await rt.signal("nobody", "pause", "p")
    assert [r.reason for r in rt.rejected] == [
        "update_context needs an object payload (a JSON merge patch)",
        "a custom signal needs a name",
        "unknown instance",
    ]
    assert rt.states["i1"].status == "waiting"


def test_merge_patch() -> None:
    assert merge_patch({"a": {"b": 1}}, {"a": {"c": 2}}) == {"a": {"b": 1, "c": 2}}
    assert merge_patch({"a": 1}, {"a": None}) == {}
    assert merge_patch([1], {"a": 1}) == {"a": 1}


# --- tasks, retries, timeouts --------------------------------------------------------------------


async def test_external_task_timeout_retries_with_backoff_then_completes() -> None:
    step = {
        "id": "charge",
        "type": "external_task",
        "handler": "payments",
        "input": {"var": "data.amount"},
        "timeout": "30s",
        "retry": {"max_attempts": 3, "backoff": "10s"},
    }
    rt = runtime(flow([step]))
    await rt.start("f", "i1", {"amount": 42})
    assert [(t.task_id, t.input) for t in rt.external] == [("i1:charge:1", 42)]
    await rt.advance(30)  # the worker died: timeout -> retry after 10 s backoff
    assert rt.states["i1"].status == "waiting"
    await rt.advance(10)
    assert [t.attempt for t in rt.external] == [1, 2]
    await rt.complete_external(rt.external[0], True, "late")  # attempt 1's late answer is ignored
    assert rt.states["i1"].status == "waiting"
    await rt.complete_external(rt.external[1], True, {"charged": 42})
    state = rt.states["i1"]
    assert state.status == "completed"
    assert state.outputs["charge"] == {"charged": 42}
    assert "stale_result:charge" in events(rt, "i1")


async def test_retries_are_limited_and_respect_retry_on() -> None:
    step = {
        "id": "x",
        "type": "external_task",
        "handler": "h",
        "retry": {"max_attempts": 5, "backoff": "1s", "retry_on": ["BUSY"]},
    }
    rt = runtime(flow([step]))
    await rt.start("f", "i1")
    await rt.send(
        StepResultEvent(instance_id="i1", key="x", attempt=1, ok=False, error={"code": "BUSY", "message": "try later"})
    )  # type: ignore[arg-type]
    await rt.advance(1)
    await rt.send(
        StepResultEvent(instance_id="i1", key="x", attempt=2, ok=False, error={"code": "DECLINED", "message": "no"})
    )  # type: ignore[arg-type]
    state = rt.states["i1"]
    assert state.status == "failed"
    assert state.error is not None and state.error.code == "DECLINED"
    assert state.error.message == "step x: no"


async def test_backoff_grows_and_is_capped() -> None:
    step = {
        "id": "x",
        "type": "external_task",
        "handler": "h",
        "retry": {"max_attempts": 5, "backoff": "10s", "max_backoff": "25s"},
    }
    rt = runtime(flow([step]))
    await rt.start("f", "i1")
    dues = []
    for attempt in range(1, 5):
        await rt.send(StepResultEvent(instance_id="i1", key="x", attempt=attempt, ok=False))
        (due,) = rt.states["i1"].timers.values()
        dues.append(due - rt.clock.now())
        await rt.advance(due - rt.clock.now())
    assert dues == [10, 20, 25, 25]


async def test_task_steps_run_engine_functions_on_the_context() -> None:
    rt = runtime(
        flow(
            [
                map_step("total", "data.total", {"*": [{"var": "data.qty"}, {"var": "data.price"}]}),
                {
                    "id": "big",
                    "type": "router",
                    "branches": [{"condition": {">": [{"var": "data.total"}, 100]}, "next": "vip"}],
                },
                {"id": "normal", "type": "terminal", "output": {"cat": ["normal:", {"var": "data.total"}]}},
                {"id": "vip", "type": "terminal", "output": {"cat": ["vip:", {"var": "data.total"}]}},
            ]
        )
    )
    assert (await rt.start("f", "a", {"qty": 2, "price": 10})).output == "normal:20"
    assert (await rt.start("f", "b", {"qty": 20, "price": 10})).output == "vip:200"
    assert rt.states["b"].outputs["big"] == {"branch": "0", "next": "vip"}


async def test_a_failing_task_function_is_retried_then_fails_the_instance() -> None:
    step = {
        "id": "v",
        "type": "task",
        "function": {"name": "validation", "input": {"rules": [{"logic": {"var": "data.ok"}, "message": "not ok"}]}},
    }
    step["retry"] = {"max_attempts": 2, "backoff": "1s"}
    rt = runtime(flow([step]))
    await rt.start("f", "i1", {"ok": False})
    await rt.advance(1)
    state = rt.states["i1"]
    assert state.status == "failed"
    assert [e["event"] for e in state.timeline if e.get("step") == "v"] == [
        "step_started",
        "step_retry",
        "step_started",
        "step_failed",
    ]


async def test_terminal_failed_and_instance_deadline() -> None:
    rt = runtime(
        flow([{"id": "stop", "type": "terminal", "status": "failed", "error": "rejected by policy"}], "a"),
        flow([{"id": "d", "type": "delay", "delay": {"duration": "1d"}}], "b", timeout="1h"),
    )
    failed = await rt.start("a", "i1")
    assert failed.status == "failed" and failed.error is not None and failed.error.message == "rejected by policy"
    await rt.start("b", "i2")
    await rt.advance(3600)
    state = rt.states["i2"]
    assert state.status == "failed" and state.error is not None and state.error.code == "TIMEOUT"
    assert len(rt.timers) == 0


async def test_router_loops_are_stopped() -> None:
    rt = runtime(flow([{"id": "r", "type": "router", "branches": [{"condition": True, "next": "r"}]}]))
    state = await rt.start("f", "i1")
    assert state.status == "failed" and state.error is not None and state.error.code == "LOOP_LIMIT"


# --- fan-out ----------------------------------------------------------------------------------------


async def test_for_each_respects_its_concurrency_and_keeps_item_order() -> None:
    step = {
        "id": "notify",
        "type": "for_each",
        "items": {"var": "data.users"},
        "concurrency": 2,
        "do": {"id": "send", "type": "external_task", "handler": "mail", "input": {"var": "temp_data.item"}},
    }
    rt = runtime(flow([step]))
    await rt.start("f", "i1", {"users": ["a", "b", "c", "d"]})
    assert [t.input for t in rt.external] == ["a", "b"]
    await rt.complete_external(rt.external[1], True, "B")
    assert [t.input for t in rt.external] == ["a", "b", "c"]
    await rt.complete_external(rt.external[0], True, "A")
    await rt.complete_external(rt.external[3], True, "D")
    await rt.complete_external(rt.external[2], True, "C")
    state = rt.states["i1"]
    assert state.status == "completed"
    assert state.outputs["notify"] == ["A", "B", "C", "D"]


async def test_for_each_is_bounded() -> None:
    step = {
        "id": "e",
        "type": "for_each",
        "items": {"var": "data.xs"},
        "max_items": 3,
        "do": {"id": "d", "type": "delay", "delay": {"duration": "1s"}},
    }
    rt = runtime(flow([step]))
    state = await rt.start("f", "i1", {"xs": [1, 2, 3, 4]})
    assert state.status == "failed" and state.error is not None and state.error.code == "TOO_MANY_ITEMS"
    empty = await rt.start("f", "i2", {"xs": []})
    assert empty.status == "completed" and empty.outputs["e"] == []
    wrong = await rt.start("f", "i3", {"xs": "abc"})
    assert wrong.error is not None and wrong.error.code == "INVALID_ITEMS"


async def test_parallel_caps_branches_in_flight() -> None:
    step = {
        "id": "p",
        "type": "parallel",
        "max_concurrency": 2,
        "steps": [
            {"id": "a", "type": "external_task", "handler": "h"},
            {"id": "b", "type": "delay", "delay": {"duration": "1m"}},
            {"id": "c", "type": "external_task", "handler": "h"},
        ],
    }
    rt = runtime(flow([step]))
    await rt.start("f", "i1")
    assert [t.key for t in rt.external] == ["p.a"]
    await rt.advance(60)  # b finishes, c starts
    assert [t.key for t in rt.external] == ["p.a", "p.c"]
    await rt.complete_external(rt.external[1], True, "C")
    await rt.complete_external(rt.external[0], True, "A")
    state = rt.states["i1"]
    assert state.status == "completed"
    assert state.outputs["p"]["a"] == "A" and state.outputs["p"]["c"] == "C"


async def test_call_flow_runs_a_pinned_child_version() -> None:
    child_v1 = flow([map_step("m", "data.v", 1)], "child", 1)
    child_v2 = flow([map_step("m", "data.v", 2)], "child", 2)
    parent = flow(
        [{"id": "call", "type": "call_flow", "flow_id": "child", "version": 1, "input": {"var": "data"}}], "parent"
    )
    rt = runtime(child_v1, child_v2, parent)
    state = await rt.start("parent", "p1", {"x": 1})
    assert state.status == "completed"
    assert state.outputs["call"] == {"x": 1, "v": 1}
    assert rt.states["p1.call.1"].parent is not None


async def test_cancelling_a_parent_cancels_its_child() -> None:
    child = flow([{"id": "w", "type": "wait_for_signal", "signal": "never"}], "child")
    parent = flow([{"id": "call", "type": "call_flow", "flow_id": "child", "version": 1}], "parent")
    rt = runtime(child, parent)
    await rt.start("parent", "p1")
    await rt.signal("p1", "cancel", "c")
    assert rt.states["p1.call.1"].status == "cancelled"
    assert rt.states["p1"].status == "cancelled"


# --- idempotency and concurrency -----------------------------------------------------------------


async def test_starting_an_existing_instance_changes_nothing() -> None:
    compiled = flow([{"id": "d", "type": "delay", "delay": {"duration": "1h"}}])
    start = StartEvent(instance_id="i1", flow_id="f", flow_version=1, idempotency_key="order-7")
    first = apply(compiled, None, start, 10.0)
    assert first.state is not None
    again = apply(compiled, first.state, start.model_copy(update={"data": {"other": True}}), 20.0)
    assert again.duplicate and again.effects == [] and again.state == first.state


async def test_stale_timers_and_results_are_ignored() -> None:
    compiled = flow([{"id": "d", "type": "delay", "delay": {"duration": "1h"}}])
    started = apply(compiled, None, StartEvent(instance_id="i1", flow_id="f", flow_version=1), 0.0).state
    fired = apply(
        compiled, started, TimerFiredEvent(instance_id="i1", timer_id="delay:d", due=3600, fired_at=3601), 3601
    )
    assert fired.state is not None and fired.state.status == "completed"
    twice = apply(
        compiled, fired.state, TimerFiredEvent(instance_id="i1", timer_id="delay:d", due=3600, fired_at=3602), 3602
    )
    assert twice.duplicate and twice.effects == []
    bogus = apply(compiled, started, StepResultEvent(instance_id="i1", key="nope", attempt=1, ok=True), 1)
    assert bogus.duplicate and bogus.effects == []


async def test_concurrency_key_serializes_instances_per_key() -> None:
    compiled = flow(
        [{"id": "w", "type": "wait_for_signal", "signal": "done"}],
        concurrency={"key": {"var": "data.customer"}, "limit": 1},
    )
    rt = runtime(compiled)
    await rt.start("f", "a1", {"customer": "A"})
    await rt.start("f", "a2", {"customer": "A"})
    await rt.start("f", "b1", {"customer": "B"})
    assert [rt.states[i].status for i in ("a1", "a2", "b1")] == ["waiting", "scheduled", "waiting"]
    await rt.signal("a1", "custom", "s", name="done")
    assert [rt.states[i].status for i in ("a1", "a2")] == ["completed", "waiting"]
    await rt.signal("a2", "cancel", "c")
    assert rt.gates["f/A"].holders == [] and rt.gates["f/A"].queue == []


async def test_a_queued_instance_can_be_cancelled_and_frees_nothing_it_did_not_hold() -> None:
    compiled = flow([{"id": "w", "type": "wait_for_signal", "signal": "done"}], concurrency={"key": "all", "limit": 1})
    rt = runtime(compiled)
    await rt.start("f", "a")
    await rt.start("f", "b")
    await rt.start("f", "c")
    await rt.signal("b", "cancel", "x")
    await rt.signal("a", "custom", "d", name="done")
    assert [rt.states[i].status for i in ("a", "b", "c")] == ["completed", "cancelled", "waiting"]


async def test_timeline_records_each_step() -> None:
    rt = runtime(flow([map_step("a", "data.x", 1), {"id": "d", "type": "delay", "delay": {"duration": "5s"}}]))
    await rt.start("f", "i1")
    await rt.advance(5)
    assert events(rt, "i1") == [
        "started:",
        "step_started:a",
        "step_completed:a",
        "step_started:d",
        "timer_fired:",
        "step_completed:d",
        "completed:",
    ]


def test_a_signal_for_an_unknown_instance_is_refused() -> None:
    result = apply(None, None, SignalEvent(instance_id="x", signal_id="s", signal="pause"), 0.0)
    assert result.state is None
    assert [type(e).__name__ for e in result.effects] == ["SignalRejected"]


@pytest.mark.parametrize("signal", ["pause", "resume", "cancel"])
def test_signals_to_a_finished_instance_are_refused(signal: str) -> None:
    compiled = flow([{"id": "end", "type": "terminal"}])
    done = apply(compiled, None, StartEvent(instance_id="i", flow_id="f", flow_version=1), 0.0).state
    assert done is not None and done.status == "completed"
    refused = apply(compiled, done, SignalEvent(instance_id="i", signal_id="s", signal=signal), 1.0)  # type: ignore[arg-type]
    assert refused.state == done
    assert [getattr(e, "reason", None) for e in refused.effects] == ["instance is completed"]


async def test_apply_never_changes_the_state_it_was_given() -> None:
    compiled = flow(
        [
            {
                "id": "p",
                "type": "parallel",
                "steps": [
                    {"id": "a", "type": "external_task", "handler": "h"},
                    {"id": "b", "type": "delay", "delay": {"duration": "1s"}},
                ],
            },
            {"id": "w", "type": "wait_for_signal", "signal": "go"},
        ]
    )
    events: list[Any] = [
        StartEvent(instance_id="i", flow_id="f", flow_version=1, data={"x": {"y": 1}}),
        SignalEvent(instance_id="i", signal_id="u", signal="update_context", payload={"x": {"z": 2}}),
        SignalEvent(instance_id="i", signal_id="g", signal="custom", name="go", payload=1),
        TimerFiredEvent(instance_id="i", timer_id="delay:p.b", due=1.0, fired_at=1.0),
        StepResultEvent(instance_id="i", key="p.a", attempt=1, ok=True, output="A"),
    ]
    state = None
    for n, event in enumerate(events):
        before = state.model_dump() if state is not None else None
        result = apply(compiled, state, event, float(n))
        if state is not None:
            assert state.model_dump() == before, f"{type(event).__name__} changed its input state"
        state = result.state
    assert state is not None and state.status == "completed"
