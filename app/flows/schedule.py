"""Cron triggers as a pure fold: `apply_schedule(schedule, state, event) -> (state, effects)`.

A fire time is an event keyed by the schedule id; its instance id is derived from the schedule id
and the fire time, so a fire produced twice (two owners around a failover, a replay) starts one
instance: the fold ignores a fire time at or before `last_fire`, and the start is idempotent.

Overlap policies, applied when a fire arrives while an earlier instance still runs:
`allow` starts anyway; `skip` drops the fire (counted); `buffer_one` keeps the newest fire and
starts it when the running one ends; `cancel_previous` cancels the running ones and starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.flows.compiler import CompiledSchedule

__all__ = [
    "CancelInstance",
    "ScheduleEvent",
    "ScheduleState",
    "StartScheduled",
    "apply_schedule",
    "due_fires",
    "fire_instance_id",
]

# Fires later than this are still "on time" (a busy worker, a rebalance); older ones need catch_up.
ON_TIME_GRACE = 60.0


class ScheduleEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["schedule_fire", "schedule_instance_ended"]
    schedule_id: str
    fire_time: float | None = None
    instance_id: str | None = None


class ScheduleState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    schedule_id: str
    last_fire: float | None = None
    running: list[str] = Field(default_factory=list)
    buffered: float | None = None
    fires: int = 0
    skipped: int = 0
    missed: int = 0


@dataclass(frozen=True, slots=True)
class StartScheduled:
    instance_id: str
    schedule_id: str
    fire_time: float


@dataclass(frozen=True, slots=True)
class CancelInstance:
    instance_id: str


def fire_instance_id(schedule_id: str, fire_time: float) -> str:
    """The deterministic start key of one fire: the same on every worker."""
    return f"{schedule_id}@{int(fire_time)}"


def apply_schedule(
    schedule: CompiledSchedule, state: ScheduleState | None, event: ScheduleEvent
) -> tuple[ScheduleState, list[StartScheduled | CancelInstance]]:
    current = state.model_copy(deep=True) if state is not None else ScheduleState(schedule_id=schedule.id)
    effects: list[StartScheduled | CancelInstance] = []
    if event.type == "schedule_instance_ended":
        if event.instance_id in current.running:
            current.running.remove(event.instance_id)
        if current.buffered is not None and not current.running:
            effects.append(_start(current, current.buffered))
            current.buffered = None
        return current, effects
    fire = event.fire_time
    if fire is None or (current.last_fire is not None and fire <= current.last_fire):
        return current, effects  # already handled: exactly one instance per fire time
    current.last_fire = fire
    policy = schedule.doc.overlap
    if current.running and policy == "skip":
        current.skipped += 1
    elif current.running and policy == "buffer_one":
        if current.buffered is not None:
            current.skipped += 1  # the older buffered fire gives way to the newer one
        current.buffered = fire
    else:
        if current.running and policy == "cancel_previous":
            effects.extend(CancelInstance(i) for i in current.running)
            current.running.clear()
        effects.append(_start(current, fire))
    return current, effects


def _start(state: ScheduleState, fire: float) -> StartScheduled:
    instance_id = fire_instance_id(state.schedule_id, fire)
    state.running.append(instance_id)
    state.fires += 1
    return StartScheduled(instance_id, state.schedule_id, fire)


def due_fires(schedule: CompiledSchedule, last_fire: float | None, since: float, now: float) -> tuple[list[float], int]:
    """Fire times to run now and the count of missed ones.

    Fires after `last_fire` (or after `since`, when the schedule has never fired) up to `now`; those
    older than `max(catch_up, ON_TIME_GRACE)` are missed, not run."""
    start = last_fire if last_fire is not None else since
    horizon = now - max(schedule.catch_up, ON_TIME_GRACE)
    missed = len(schedule.cron.due_between(start, horizon - 0.001)) if start < horizon - 0.001 else 0
    return schedule.cron.due_between(max(start, horizon - 0.001), now), missed
