"""An in-memory runtime: the state machine, its effects and a timer queue on an injectable clock.

It is the reference interpreter of the effects (the Kafka runtime does the same with records) and
what tests and dry-runs use: `await runtime.advance(3 * 86400)` fires a three-day delay at once,
in due order, with the clock set to each timer's due time.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from app.flows.clock import VirtualClock
from app.flows.compiler import CompiledFlow
from app.flows.effects import follow_ups
from app.flows.gate import GateEvent, GateState, apply_gate
from app.flows.instance import (
    CancelTimer,
    Effect,
    Event,
    Finished,
    InstanceState,
    PublishExternalTask,
    RunTask,
    ScheduleTimer,
    SignalEvent,
    SignalRejected,
    SlotGranted,
    StartEvent,
    StepError,
    StepResultEvent,
    TimerFiredEvent,
)
from app.flows.machine import apply, flow_for
from app.flows.schedule import ScheduleEvent
from app.flows.tasks import run_task

__all__ = ["LocalRuntime", "TimerQueue"]


@dataclass(order=True, slots=True)
class _Entry:
    due: float
    seq: int
    instance_id: str = field(compare=False)
    timer_id: str = field(compare=False)


class TimerQueue:
    """Pending timers by due time; cancelling is lazy (a cancelled entry is skipped when popped)."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._live: dict[tuple[str, str], float] = {}
        self._seq = 0

    def __len__(self) -> int:
        return len(self._live)

    def schedule(self, instance_id: str, timer_id: str, due: float) -> None:
        self._live[(instance_id, timer_id)] = due
        self._seq += 1
        heapq.heappush(self._heap, _Entry(due, self._seq, instance_id, timer_id))

    def cancel(self, instance_id: str, timer_id: str) -> None:
        self._live.pop((instance_id, timer_id), None)

    def carry_out(self, effect: Effect) -> bool:
        """Schedule or cancel the timer of a timer effect; False (nothing done) for any other effect."""
        if isinstance(effect, ScheduleTimer):
            self.schedule(effect.instance_id, effect.timer_id, effect.due)
        elif isinstance(effect, CancelTimer):
            self.cancel(effect.instance_id, effect.timer_id)
        else:
            return False
        return True

    def forget_instance(self, instance_id: str) -> None:
        for key in [k for k in self._live if k[0] == instance_id]:
            del self._live[key]

    def next_due(self) -> float | None:
        while self._heap:
            top = self._heap[0]
            if self._live.get((top.instance_id, top.timer_id)) == top.due:
                return top.due
            heapq.heappop(self._heap)
        return None

    def pop_due(self, now: float) -> list[tuple[str, str, float]]:
        """Every live timer due at or before `now`, oldest first, removed from the queue."""
        fired: list[tuple[str, str, float]] = []
        while True:
            due = self.next_due()
            if due is None or due > now:
                return fired
            top = heapq.heappop(self._heap)
            del self._live[(top.instance_id, top.timer_id)]
            fired.append((top.instance_id, top.timer_id, top.due))


class LocalRuntime:
    """Runs instances of the given flow versions in memory, on `clock`."""

    def __init__(self, flows: Iterable[CompiledFlow], clock: VirtualClock | None = None, services: Any = None) -> None:
        self.flows = {(f.id, f.version): f for f in flows}
        self.clock = clock or VirtualClock()
        self.services = services
        self.states: dict[str, InstanceState] = {}
        self.gates: dict[str, GateState] = {}
        self.timers = TimerQueue()
        self.external: list[PublishExternalTask] = []
        self.rejected: list[SignalRejected] = []
        self.finished: list[Finished] = []
        self.lateness: list[float] = []
        self._queue: deque[Event | GateEvent] = deque()

    def flow_of(self, state: InstanceState) -> CompiledFlow | None:
        return self.flows.get((state.flow_id, state.flow_version))

    # -- what a client does --------------------------------------------------------------------

    async def start(
        self, flow_id: str, instance_id: str, data: Any = None, *, version: int | None = None, **extra: Any
    ) -> InstanceState:
        if version is None:
            version = max(v for (fid, v) in self.flows if fid == flow_id)
        event = StartEvent(
            instance_id=instance_id,
            flow_id=flow_id,
            flow_version=version,
            data=data if data is not None else {},
            **extra,
        )
        await self.send(event)
        return self.states[instance_id]

    async def signal(
        self, instance_id: str, signal: str, signal_id: str, *, name: str | None = None, payload: Any = None
    ) -> None:
        await self.send(
            SignalEvent(instance_id=instance_id, signal_id=signal_id, signal=signal, name=name, payload=payload)  # type: ignore[arg-type]
        )

    async def complete_external(self, task: PublishExternalTask, ok: bool = True, output: Any = None) -> None:
        error = None if ok else StepError(code="WORKER_FAILED", message=str(output))
        await self.send(
            StepResultEvent(
                instance_id=task.instance_id, key=task.key, attempt=task.attempt, ok=ok, output=output, error=error
            )
        )

    async def advance(self, seconds: float) -> None:
        """Move the clock forward, firing every timer that falls due on the way, in due order."""
        target = self.clock.now() + seconds
        while True:
            due = self.timers.next_due()
            if due is None or due > target:
                break
            self.clock.set(max(due, self.clock.now()))
            for instance_id, timer_id, fired_due in self.timers.pop_due(self.clock.now()):
                self.lateness.append(self.clock.now() - fired_due)
                await self.send(
                    TimerFiredEvent(
                        instance_id=instance_id, timer_id=timer_id, due=fired_due, fired_at=self.clock.now()
                    )
                )
        self.clock.set(target)

    # -- the loop ------------------------------------------------------------------------------

    async def send(self, event: Event | GateEvent) -> None:
        """Deliver one event and everything it causes, in order, until nothing is left to do."""
        self._queue.append(event)
        while self._queue:
            current = self._queue.popleft()
            if isinstance(current, GateEvent):
                self._gate(current)
                continue
            state = self.states.get(current.instance_id)
            flow = flow_for(current, state, lambda flow_id, version: self.flows.get((flow_id, version)))
            result = apply(flow, state, current, self.clock.now())
            if result.state is not None:
                self.states[result.state.id] = result.state  # the snapshot is stored before any effect
            for effect in result.effects:
                await self._effect(effect)

    def _gate(self, event: GateEvent) -> None:
        state, granted = apply_gate(self.gates.get(event.gate), event)
        self.gates[event.gate] = state
        self._queue.extend(SlotGranted(instance_id=i) for i in granted)

    async def _effect(self, effect: Effect) -> None:
        if self.timers.carry_out(effect):
            pass
        elif isinstance(effect, RunTask):
            state = self.states[effect.instance_id]
            flow = self.flow_of(state)
            assert flow is not None
            self._queue.append(await run_task(flow, effect, self.services))
        elif isinstance(effect, PublishExternalTask):
            self.external.append(effect)
        elif isinstance(effect, Finished):
            self.finished.append(effect)
        elif isinstance(effect, SignalRejected):
            self.rejected.append(effect)
        for event in follow_ups(effect):
            if not isinstance(event, ScheduleEvent):  # schedules are driven by the Kafka runtime only
                self._queue.append(event)
