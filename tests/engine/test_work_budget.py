"""Issue 14 item 6: the work one record may cost is bounded, and a costly record does not hold the loop.

- rules refuse to iterate over more array items than the limit (quadratic `reduce`+`merge` tighter);
- a spent time budget stops the run before the next task (`WORK_BUDGET_EXCEEDED`, never retried);
- `channel_call` counts every call of the request's call tree, and yields to the event loop per call.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from app.connectors import ConnectorServices, connector_registry
from app.engine.budget import BudgetExceeded, WorkBudget
from app.engine.compiler import compile_workflow
from app.engine.executor import Engine, RunOptions
from app.engine.jsonlogic import MAX_ITERATED_ITEMS, MAX_NESTED_ITERATED_ITEMS, LogicError, compile_logic
from app.engine.message import Message

REGISTRY = connector_registry()
REDUCE_MERGE = {"reduce": [{"var": "data.users"}, {"merge": [{"var": "accumulator"}, [{"var": "current"}]]}, []]}


def _users(n: int) -> dict[str, Any]:
    return {"data": {"users": [{"id": i} for i in range(n)]}}


def test_a_quadratic_rule_refuses_large_input_before_running() -> None:
    rule = compile_logic(REDUCE_MERGE)
    assert rule.evaluate(_users(MAX_NESTED_ITERATED_ITEMS)) == [{"id": i} for i in range(MAX_NESTED_ITERATED_ITEMS)]
    started = time.perf_counter()
    with pytest.raises(LogicError, match="iterates over more than"):
        rule.evaluate(_users(6000))  # took 4.7-8 s of one event loop before
    assert time.perf_counter() - started < 1.0  # refused up front, not after the work
    assert not rule.is_true(_users(6000))  # as a condition: an error is false


def test_a_linear_rule_has_the_larger_limit() -> None:
    rule = compile_logic({"map": [{"var": "data.users"}, {"var": "id"}]})
    assert len(rule.evaluate(_users(MAX_ITERATED_ITEMS))) == MAX_ITERATED_ITEMS
    with pytest.raises(LogicError):
        rule.evaluate(_users(MAX_ITERATED_ITEMS + 1))
    # Rules that do not iterate are not limited.
    assert compile_logic({"var": "data.users.0.id"}).evaluate(_users(50_000)) == 0


def _wf(wid: str, *fns: dict[str, Any]) -> Any:
    tasks = [{"id": f"t{i}", "name": f"t{i}", "function": f, "continue_on_error": True} for i, f in enumerate(fns)]
    return compile_workflow({"workflow_id": wid, "name": wid, "continue_on_error": True, "tasks": tasks}, REGISTRY)


def _map(value: Any) -> dict[str, Any]:
    return {"name": "map", "input": {"mappings": [{"path": "data.x", "logic": value}]}}


async def test_a_spent_time_budget_stops_the_run_whatever_continue_on_error_says() -> None:
    engine = Engine({"c": [_wf("w1", _map(1), _map(2)), _wf("w2", _map(3))]})
    with pytest.raises(BudgetExceeded) as info:
        await engine.process("c", Message.from_request({}), RunOptions(budget=WorkBudget(time_s=-1.0)))
    assert info.value.code == "WORK_BUDGET_EXCEEDED" and not info.value.retryable
    out = await engine.process("c", Message.from_request({}), RunOptions(budget=WorkBudget(time_s=60)))
    assert out.data["x"] == 3


def _fan_out_engine(levels: int) -> Engine:
    """c0 calls c1 twice, c1 calls c2 twice, ...: 2 + 4 + ... calls from a 20-byte request."""
    channels: dict[str, Any] = {}
    for i in range(levels):
        nxt = {"name": "channel_call", "input": {"channel": f"c{i + 1}", "response_path": "data.r"}}
        channels[f"c{i}"] = [_wf(f"w{i}", nxt, nxt)]
    channels[f"c{levels}"] = [_wf(f"w{levels}", _map(1))]
    return Engine(channels, REGISTRY)


async def test_a_channel_call_fan_out_is_bounded_and_yields_to_other_work() -> None:
    engine = _fan_out_engine(9)  # 1022 calls unbounded
    budget = WorkBudget(max_calls=40)
    ticks = 0
    stop = asyncio.Event()

    async def neighbour() -> None:  # another partition's work on the same loop
        nonlocal ticks
        while not stop.is_set():
            ticks += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(neighbour())
    await asyncio.sleep(0)
    try:
        out = await engine.process(
            "c0", Message.from_request({"n": 1}), RunOptions(services=ConnectorServices({}), budget=budget)
        )
    finally:
        stop.set()
        await other
    assert budget.calls <= 40 + 2 * 9, budget.calls  # refused calls: at most the two of each open level
    assert any("exceeded 40 channel_calls" in e["message"] for e in out.errors), out.errors[:3]
    assert ticks >= 10  # the loop ran the neighbour between calls
