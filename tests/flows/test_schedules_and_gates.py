"""Cron overlap policies, exactly one instance per fire time, catch-up, and the concurrency gate."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from app.flows import GateEvent, ScheduleEvent, apply_gate, apply_schedule, compile_schedule, due_fires
from app.flows.schedule import CancelInstance, ScheduleState, StartScheduled, fire_instance_id

T0 = datetime(2026, 1, 5, 9, 0, tzinfo=UTC).timestamp()


def schedule(**extra: Any) -> Any:
    return compile_schedule({"id": "s", "name": "S", "cron": "*/5 * * * *", "flow_id": "f", **extra})


def fire(state: ScheduleState | None, sched: Any, at: float) -> tuple[ScheduleState, list[Any]]:
    return apply_schedule(sched, state, ScheduleEvent(type="schedule_fire", schedule_id="s", fire_time=at))


def ended(state: ScheduleState, sched: Any, instance_id: str) -> tuple[ScheduleState, list[Any]]:
    return apply_schedule(
        sched, state, ScheduleEvent(type="schedule_instance_ended", schedule_id="s", instance_id=instance_id)
    )


def test_one_instance_per_fire_time_even_when_fired_twice() -> None:
    sched = schedule(overlap="allow")
    state, first = fire(None, sched, T0)
    state, again = fire(state, sched, T0)  # a second owner fires the same time after a failover
    state, older = fire(state, sched, T0 - 300)
    assert first == [StartScheduled(fire_instance_id("s", T0), "s", T0)]
    assert again == [] and older == []
    assert state.fires == 1


def test_allow_starts_while_another_runs() -> None:
    sched = schedule(overlap="allow")
    state, _ = fire(None, sched, T0)
    state, effects = fire(state, sched, T0 + 300)
    assert len(effects) == 1 and len(state.running) == 2


def test_skip_drops_fires_while_one_runs_and_counts_them() -> None:
    sched = schedule(overlap="skip")
    state, _ = fire(None, sched, T0)
    state, effects = fire(state, sched, T0 + 300)
    assert effects == [] and state.skipped == 1
    state, _ = ended(state, sched, fire_instance_id("s", T0))
    state, effects = fire(state, sched, T0 + 600)
    assert [e.fire_time for e in effects] == [T0 + 600]


def test_buffer_one_keeps_the_newest_fire_until_the_running_one_ends() -> None:
    sched = schedule(overlap="buffer_one")
    state, _ = fire(None, sched, T0)
    state, none1 = fire(state, sched, T0 + 300)
    state, none2 = fire(state, sched, T0 + 600)
    assert none1 == none2 == [] and state.buffered == T0 + 600 and state.skipped == 1
    state, effects = ended(state, sched, fire_instance_id("s", T0))
    assert effects == [StartScheduled(fire_instance_id("s", T0 + 600), "s", T0 + 600)]
    assert state.buffered is None and state.running == [fire_instance_id("s", T0 + 600)]


def test_cancel_previous_cancels_then_starts() -> None:
    sched = schedule(overlap="cancel_previous")
    state, _ = fire(None, sched, T0)
    state, effects = fire(state, sched, T0 + 300)
    assert effects == [
        CancelInstance(fire_instance_id("s", T0)),
        StartScheduled(fire_instance_id("s", T0 + 300), "s", T0 + 300),
    ]
    assert state.running == [fire_instance_id("s", T0 + 300)]


def test_missed_fires_are_caught_up_to_the_horizon_and_counted() -> None:
    sched = schedule(catch_up="15m")
    now = T0 + 3600
    run, missed = due_fires(sched, T0, T0, now)
    # fires every 5 min after T0: 12 in the hour; those at or after now - 15 min run.
    assert run == [now - 900, now - 600, now - 300, now]
    assert missed == 8
    run, missed = due_fires(schedule(), T0, T0, now)  # no catch-up: only the on-time grace (60 s)
    assert run == [now] and missed == 11
    assert due_fires(schedule(), None, now - 1, now) == ([now], 0)  # a new schedule starts from `since`


def test_gate_grants_in_order_up_to_the_limit() -> None:
    def event(kind: str, instance: str, limit: int = 2) -> GateEvent:
        return GateEvent(type=kind, gate="g", instance_id=instance, limit=limit)  # type: ignore[arg-type]

    state, granted = apply_gate(None, event("gate_request", "a"))
    assert granted == ["a"]
    state, granted = apply_gate(state, event("gate_request", "b"))
    state, granted2 = apply_gate(state, event("gate_request", "c"))
    state, repeat = apply_gate(state, event("gate_request", "c"))
    assert granted == ["b"] and granted2 == [] and repeat == [] and state.queue == ["c"]
    state, granted = apply_gate(state, event("gate_release", "a"))
    assert granted == ["c"] and state.holders == ["b", "c"]
    state, granted = apply_gate(state, event("gate_release", "zzz"))
    assert granted == [] and state.holders == ["b", "c"]
