"""Effects that are just events for other keys: every runtime turns them into the same events.

`follow_up(effect)` returns the event to deliver (to the partition of its key, on Kafka) or None for
effects a runtime carries out itself (timers, tasks, external tasks, refusals).
"""

from __future__ import annotations

from app.flows.gate import GateEvent
from app.flows.instance import (
    CancelChild,
    Effect,
    Event,
    Finished,
    ParentRef,
    ReleaseSlot,
    RequestSlot,
    SignalEvent,
    StartChild,
    StartEvent,
    StepResultEvent,
)
from app.flows.schedule import ScheduleEvent

__all__ = ["follow_ups"]


def follow_ups(effect: Effect) -> list[Event | GateEvent | ScheduleEvent]:
    """The events `effect` stands for: a child start, a cancel, a gate request or release, and for a
    finished instance its parent's step result and its schedule's `instance_ended`."""
    if isinstance(effect, StartChild):
        parent = ParentRef(instance_id=effect.parent_id, key=effect.key, attempt=effect.attempt)
        return [
            StartEvent(
                instance_id=effect.child_id,
                flow_id=effect.flow_id,
                flow_version=effect.flow_version,
                data=effect.data,
                parent=parent,
            )
        ]
    if isinstance(effect, CancelChild):
        # One id per child: a repeated cancel of the same child is applied once.
        return [SignalEvent(instance_id=effect.child_id, signal_id="parent-cancel", signal="cancel")]
    if isinstance(effect, RequestSlot):
        return [GateEvent(type="gate_request", gate=effect.gate, instance_id=effect.instance_id, limit=effect.limit)]
    if isinstance(effect, ReleaseSlot):
        return [GateEvent(type="gate_release", gate=effect.gate, instance_id=effect.instance_id, limit=1)]
    if isinstance(effect, Finished):
        events: list[Event | GateEvent | ScheduleEvent] = []
        if effect.parent is not None:
            events.append(
                StepResultEvent(
                    instance_id=effect.parent.instance_id,
                    key=effect.parent.key,
                    attempt=effect.parent.attempt,
                    ok=effect.status == "completed",
                    output=effect.output,
                    error=effect.error,
                )
            )
        if effect.schedule_id is not None:
            events.append(
                ScheduleEvent(
                    type="schedule_instance_ended", schedule_id=effect.schedule_id, instance_id=effect.instance_id
                )
            )
        return events
    return []
