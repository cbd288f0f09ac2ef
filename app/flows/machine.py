"""The instance state machine: `apply(flow, state, event, now) -> Transition(state, effects)`.

Pure and deterministic: the same state, event and `now` give the same result (timer ids, task ids,
child ids and jitter are derived from the instance id, never random), so a new partition owner that
replays an event after a crash computes exactly what the old owner did.

Rules in one place:
- a leaf step's result is accepted only for its current attempt; late or repeated results are
  ignored (recorded in the timeline), which makes redelivery harmless;
- every pending timer is in `state.timers`; a timer event for an id that is not there is stale;
- while paused, results and timers are still recorded but no new step starts until `resume`;
- signals are applied in arrival order; a custom signal nobody waits for yet is kept (up to 100)
  and handed to the next `wait_for_signal` for its name;
- signals to a finished instance are refused with a reason (`SignalRejected`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from app.engine.jsonlogic import LogicError
from app.engine.paths import clone
from app.flows.compiler import CompiledFlow
from app.flows.instance import (
    Branch,
    CancelChild,
    CancelTimer,
    Effect,
    Event,
    FanOut,
    Finished,
    InstanceState,
    Pending,
    PublishExternalTask,
    ReleaseSlot,
    RequestSlot,
    RunTask,
    ScheduleTimer,
    SignalEvent,
    SignalRejected,
    SlotGranted,
    StartChild,
    StartEvent,
    StepError,
    StepResultEvent,
    TimerFiredEvent,
    valid_instance_id,
)
from app.flows.models import (
    CallFlowStep,
    DelayStep,
    ExternalTaskStep,
    ForEachStep,
    ParallelStep,
    RouterStep,
    TaskStep,
    TerminalStep,
    WaitForSignalStep,
)
from app.flows.timing import (
    TimingError,
    add_business_days,
    jitter_seconds,
    next_business_instant,
    parse_instant,
    zone,
)

__all__ = ["MAX_INBOX", "MAX_TIMELINE", "Transition", "apply", "flow_for", "merge_patch", "resume_effects"]

MAX_TIMELINE = 500
MAX_INBOX = 100
MAX_SIGNAL_IDS = 200
MAX_STEPS_PER_EVENT = 1000  # routers that loop without waiting stop the instance here


@dataclass(slots=True)
class Transition:
    """The new state (None: the event created nothing) and the effects to carry out after storing it.

    `duplicate`: the event changed nothing because it was already applied (idempotent start,
    repeated signal, stale timer or result)."""

    state: InstanceState | None
    effects: list[Effect] = field(default_factory=list)
    duplicate: bool = False
    timeline: list[dict[str, Any]] = field(default_factory=list)


def flow_for(
    event: Event, state: InstanceState | None, lookup: Callable[[str, int], CompiledFlow | None]
) -> CompiledFlow | None:
    """The flow version `event` is applied with: the one a start names, else its instance's pinned one."""
    if isinstance(event, StartEvent):
        return lookup(event.flow_id, event.flow_version)
    return lookup(state.flow_id, state.flow_version) if state is not None else None


def apply(flow: CompiledFlow | None, state: InstanceState | None, event: Event, now: float) -> Transition:
    """Apply one event. `flow` is the instance's pinned flow version (None when it is unknown)."""
    if isinstance(event, StartEvent):
        if state is not None:
            return Transition(state, duplicate=True)
        if flow is None:
            return Transition(None)
        return _Run(flow, _new_state(event, now), now).start()
    if state is None:
        if isinstance(event, SignalEvent):
            return Transition(None, [SignalRejected(event.instance_id, event.signal_id, "unknown instance")])
        return Transition(None, duplicate=True)
    if flow is None:
        # The pinned version is gone (deleted config): fail rather than wait forever.
        run = _Run(None, _fork(state), now)
        run.finish(
            "failed", None, StepError(code="FLOW_NOT_FOUND", message=f"flow {state.flow_id} v{state.flow_version}")
        )
        return run.transition()
    return _Run(flow, _fork(state), now).handle(event)


def _fork(state: InstanceState) -> InstanceState:
    """A copy the transition may change without touching `state`: the containers a transition mutates
    are copied (a deep copy cost more than the whole transition); their values are replaced, never
    mutated in place, except branches and the fan-out, which are copied too."""
    fan = state.fanout
    return state.model_copy(
        update={
            "context": dict(state.context),
            "branches": {k: b.model_copy() for k, b in state.branches.items()},
            "fanout": fan.model_copy(update={"results": dict(fan.results)}) if fan is not None else None,
            "outputs": dict(state.outputs),
            "timers": dict(state.timers),
            "inbox": list(state.inbox),
            "signals_seen": list(state.signals_seen),
            "timeline": list(state.timeline),
        }
    )


def _new_state(event: StartEvent, now: float) -> InstanceState:
    return InstanceState(
        id=event.instance_id,
        flow_id=event.flow_id,
        flow_version=event.flow_version,
        context={"data": event.data, "metadata": event.metadata, "temp_data": {}},
        parent=event.parent,
        idempotency_key=event.idempotency_key,
        schedule_id=event.schedule_id,
        created_at=now,
        updated_at=now,
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return clone(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def child_instance_id(parent_id: str, key: str, attempt: int) -> str:
    candidate = f"{parent_id}.{key}.{attempt}"
    if valid_instance_id(candidate):
        return candidate
    return "child-" + hashlib.blake2b(candidate.encode(), digest_size=16).hexdigest()


class _Run:
    """One transition in progress: a private copy of the state plus the effects collected so far."""

    def __init__(self, flow: CompiledFlow | None, state: InstanceState, now: float) -> None:
        self.flow = flow
        self.s = state
        self.now = now
        self.fx: list[Effect] = []
        self.notes: list[dict[str, Any]] = []
        self.duplicate = False

    # -- bookkeeping -------------------------------------------------------------------------

    def note(self, what: str, step: str | None = None, **detail: Any) -> None:
        entry: dict[str, Any] = {"at": self.now, "event": what}
        if step is not None:
            entry["step"] = step
        entry.update(detail)
        self.notes.append(entry)
        self.s.timeline.append(entry)
        if len(self.s.timeline) > MAX_TIMELINE:
            del self.s.timeline[: len(self.s.timeline) - MAX_TIMELINE]

    def transition(self) -> Transition:
        self.s.events += 1
        self.s.updated_at = self.now
        self._refresh_status()
        return Transition(self.s, self.fx, self.duplicate, self.notes)

    def set_timer(self, timer_id: str, due: float) -> None:
        self.s.timers[timer_id] = due
        self.fx.append(ScheduleTimer(self.s.id, timer_id, due))

    def clear_timer(self, timer_id: str | None) -> None:
        if timer_id is not None and self.s.timers.pop(timer_id, None) is not None:
            self.fx.append(CancelTimer(self.s.id, timer_id))

    def logic_context(self, branch_index: int | None = None, item: Any = None) -> dict[str, Any]:
        ctx = self.s.context
        temp = dict(ctx.get("temp_data") or {})
        if branch_index is not None:
            temp["item"] = item
            temp["index"] = branch_index
        return {
            "data": ctx.get("data"),
            "metadata": ctx.get("metadata"),
            "temp_data": temp,
            "outputs": self.s.outputs,
        }

    def _refresh_status(self) -> None:
        s = self.s
        if s.terminal:
            return
        if s.paused:
            s.status = "paused"
        elif not s.admitted:
            s.status = "scheduled"
        elif any(b.phase == "running" for b in s.branches.values()):
            s.status = "running"
        elif s.branches:
            s.status = "waiting"
        else:
            s.status = "running"

    # -- entry points ------------------------------------------------------------------------

    def start(self) -> Transition:
        flow = self.flow
        assert flow is not None
        self.note("started", version=flow.version)
        if flow.instance_timeout is not None:
            self.set_timer("deadline", self.now + flow.instance_timeout)
        self.s.cursor = flow.order[0]
        if flow.concurrency_key is not None and flow.doc.concurrency is not None:
            try:
                value = flow.concurrency_key.evaluate(self.logic_context())
            except LogicError as exc:
                self.finish("failed", None, StepError(code="LOGIC_ERROR", message=f"concurrency.key: {exc}"))
                return self.transition()
            if value is not None:
                self.s.concurrency_key = f"{flow.id}/{str(value)[:200]}"
                self.s.admitted = False
                self.fx.append(RequestSlot(self.s.concurrency_key, self.s.id, flow.doc.concurrency.limit))
                self.note("queued", gate=self.s.concurrency_key)
                return self.transition()
        self.settle()
        return self.transition()

    def handle(self, event: Event) -> Transition:
        if self.s.terminal and not isinstance(event, SignalEvent):
            self.duplicate = True
            if isinstance(event, SlotGranted) and self.s.concurrency_key:
                self.fx.append(ReleaseSlot(self.s.concurrency_key, self.s.id))  # granted after a cancel
            return Transition(self.s, self.fx, True)
        if isinstance(event, StepResultEvent):
            self.on_result(event)
        elif isinstance(event, TimerFiredEvent):
            self.on_timer(event)
        elif isinstance(event, SignalEvent):
            if not self.on_signal(event):
                return Transition(self.s, self.fx, self.duplicate)
        elif isinstance(event, SlotGranted):
            if self.s.admitted:
                self.duplicate = True
            else:
                self.s.admitted = True
                self.note("admitted", gate=self.s.concurrency_key)
        if self.duplicate and not self.fx and not self.notes:
            return Transition(self.s, [], True)
        self.settle()
        return self.transition()

    # -- moving forward ----------------------------------------------------------------------

    def settle(self) -> None:
        """Start whatever can start now: fill a fan-out, walk control steps, run the next leaf."""
        flow = self.flow
        assert flow is not None
        s = self.s
        walked = 0
        while not s.terminal and not s.paused and s.admitted:
            if s.fanout is not None:
                self.fill_fanout()
                if s.fanout is not None or s.branches or s.terminal:
                    return
                continue
            if s.branches:
                return
            if s.cursor is None:
                self.finish("completed", clone(s.context.get("data")), None)
                return
            walked += 1
            if walked > MAX_STEPS_PER_EVENT:
                self.fail("LOOP_LIMIT", f"more than {MAX_STEPS_PER_EVENT} steps without waiting (a router loop?)")
                return
            step = flow.steps[s.cursor]
            if isinstance(step, RouterStep):
                self.route(step)
            elif isinstance(step, TerminalStep):
                self.terminal(step)
            elif isinstance(step, ForEachStep):
                self.begin_for_each(step)
            elif isinstance(step, ParallelStep):
                s.fanout = FanOut(step_id=step.id, total=len(step.steps))
                self.note("step_started", step.id, branches=len(step.steps))
            else:
                self.start_leaf(step, step.id, None, None, 1)

    def route(self, step: RouterStep) -> None:
        flow = self.flow
        assert flow is not None
        ctx = self.logic_context()
        target: str | None = None
        chosen = "default"
        for i, branch in enumerate(step.branches):
            if flow.logic[f"{step.id}.branch{i}"].is_true(ctx):
                target, chosen = branch.next, str(i)
                break
        else:
            target = step.default if step.default is not None else flow.following(step.id)
        self.s.outputs[step.id] = {"branch": chosen, "next": target}
        self.note("routed", step.id, branch=chosen, next=target)
        self.s.cursor = target

    def terminal(self, step: TerminalStep) -> None:
        flow = self.flow
        assert flow is not None
        output: Any = clone(self.s.context.get("data"))
        if step.output is not None:
            try:
                output = flow.logic[f"{step.id}.output"].evaluate(self.logic_context())
            except LogicError as exc:
                self.fail("LOGIC_ERROR", f"step {step.id} output: {exc}")
                return
        error = None
        if step.status == "failed":
            error = StepError(code="FLOW_FAILED", message=step.error or f"terminal step {step.id}")
        self.note("terminal", step.id, status=step.status)
        self.finish(step.status, output, error)

    def begin_for_each(self, step: ForEachStep) -> None:
        flow = self.flow
        assert flow is not None
        try:
            items = flow.logic[f"{step.id}.items"].evaluate(self.logic_context())
        except LogicError as exc:
            self.fail("LOGIC_ERROR", f"step {step.id} items: {exc}")
            return
        if not isinstance(items, list):
            self.fail("INVALID_ITEMS", f"step {step.id}: items must be a list, got {type(items).__name__}")
            return
        if len(items) > step.max_items:
            self.fail("TOO_MANY_ITEMS", f"step {step.id}: {len(items)} items, max_items is {step.max_items}")
            return
        self.note("step_started", step.id, items=len(items))
        if not items:
            self.s.outputs[step.id] = []
            self.s.cursor = flow.following(step.id)
            return
        self.s.fanout = FanOut(step_id=step.id, total=len(items), items=items)

    def fill_fanout(self) -> None:
        flow = self.flow
        fan = self.s.fanout
        assert flow is not None and fan is not None
        step = flow.steps[fan.step_id]
        assert isinstance(step, ForEachStep | ParallelStep)
        cap = step.concurrency if isinstance(step, ForEachStep) else step.max_concurrency
        while (
            self.s.fanout is fan
            and not self.s.terminal
            and not self.s.paused
            and fan.next_index < fan.total
            and len(self.s.branches) < cap
        ):
            index = fan.next_index
            fan.next_index += 1
            if isinstance(step, ForEachStep):
                self.start_leaf(step.do, f"{step.id}.{index}", step.id, index, 1)
            else:
                leaf = step.steps[index]
                self.start_leaf(leaf, f"{step.id}.{leaf.id}", step.id, index, 1)

    def start_leaf(
        self,
        step: TaskStep | DelayStep | WaitForSignalStep | ExternalTaskStep | CallFlowStep,
        key: str,
        owner: str | None,
        index: int | None,
        attempt: int,
    ) -> None:
        flow = self.flow
        assert flow is not None
        s = self.s
        branch = Branch(key=key, step_id=step.id, owner=owner, index=index, attempt=attempt, started_at=self.now)
        s.branches[key] = branch
        self.note("step_started", key, attempt=attempt, kind=step.type)
        item = None
        if owner is not None and s.fanout is not None and s.fanout.items and index is not None:
            item = s.fanout.items[index]
        ctx = self.logic_context(index if owner is not None else None, item)
        timeout = flow.timeout.get(step.id)
        if isinstance(step, DelayStep):
            try:
                due = self.delay_due(step, key, ctx)
            except (TimingError, LogicError) as exc:
                self.leaf_failed(branch, StepError(code="INVALID_DELAY", message=str(exc)), retryable=False)
                return
            if due <= self.now:
                self.leaf_done(branch, {"due": due, "fired_at": self.now})
                return
            branch.phase = "waiting"
            branch.timer = f"delay:{key}"
            self.set_timer(branch.timer, due)
            return
        if isinstance(step, WaitForSignalStep):
            for position, pending in enumerate(s.inbox):
                if pending.name == step.signal:
                    del s.inbox[position]
                    self.note("signal_consumed", key, name=step.signal, signal_id=pending.signal_id)
                    self.leaf_done(branch, pending.payload)
                    return
            branch.phase = "waiting"
        elif isinstance(step, TaskStep):
            snapshot = clone(ctx)
            self.fx.append(RunTask(s.id, key, step.id, attempt, snapshot, f"{s.id}:{key}:{attempt}"))
        else:
            rule = flow.logic.get(f"{step.id}.input")
            try:
                payload = rule.evaluate(ctx) if rule is not None else clone(ctx["data"])
            except LogicError as exc:
                self.leaf_failed(branch, StepError(code="LOGIC_ERROR", message=f"input: {exc}"), retryable=False)
                return
            branch.phase = "waiting"
            if isinstance(step, ExternalTaskStep):
                branch.task_id = f"{s.id}:{key}:{attempt}"
                deadline = self.now + timeout if timeout is not None else None
                self.fx.append(PublishExternalTask(s.id, branch.task_id, step.handler, key, attempt, payload, deadline))
            else:
                branch.task_id = child_instance_id(s.id, key, attempt)
                self.fx.append(StartChild(s.id, key, attempt, branch.task_id, step.flow_id, step.version, payload))
        if timeout is not None:
            branch.timer = f"timeout:{key}:{attempt}"
            self.set_timer(branch.timer, self.now + timeout)

    def delay_due(self, step: DelayStep, key: str, ctx: dict[str, Any]) -> float:
        flow = self.flow
        assert flow is not None
        spec = step.delay
        tz = zone(spec.timezone)
        calendar = spec.business_days
        if spec.duration is not None:
            seconds = flow.durations[step.id]
            if calendar is not None:
                start = datetime.fromtimestamp(self.now, tz)
                due = add_business_days(start, int(seconds // 86400), calendar).timestamp()
            else:
                due = self.now + seconds
        elif spec.until is not None:
            due = parse_instant(spec.until, tz)
        else:
            due = parse_instant(flow.logic[f"{step.id}.until"].evaluate(ctx), tz)
        if calendar is not None:
            due = next_business_instant(datetime.fromtimestamp(due, tz), calendar).timestamp()
        jitter = flow.durations.get(f"{step.id}.jitter")
        if jitter:
            due += jitter_seconds(f"{self.s.id}:{key}", jitter)
        return due

    # -- leaf outcomes -----------------------------------------------------------------------

    def leaf_done(self, branch: Branch, output: Any, data: Any = None) -> None:
        flow = self.flow
        assert flow is not None
        s = self.s
        self.clear_timer(branch.timer)
        s.branches.pop(branch.key, None)
        self.note("step_completed", branch.key, attempt=branch.attempt)
        if branch.owner is None:
            s.outputs[branch.step_id] = output
            if data is not None:
                s.context["data"] = data
            s.cursor = flow.following(branch.step_id)
            return
        fan = s.fanout
        assert fan is not None and branch.index is not None
        fan.results[branch.index] = output
        if len(fan.results) == fan.total:
            step = flow.steps[fan.step_id]
            if isinstance(step, ParallelStep):
                s.outputs[step.id] = {step.steps[i].id: fan.results[i] for i in range(fan.total)}
            else:
                s.outputs[step.id] = [fan.results[i] for i in range(fan.total)]
            s.fanout = None
            self.note("step_completed", step.id)
            s.cursor = flow.following(step.id)

    def leaf_failed(self, branch: Branch, error: StepError, retryable: bool = True) -> None:
        flow = self.flow
        assert flow is not None
        self.clear_timer(branch.timer)
        branch.timer = None
        policy = flow.retry_of(branch.step_id)
        if retryable and policy.retries(branch.attempt, error.code):
            branch.attempt += 1
            branch.phase = "backoff"
            branch.task_id = None
            branch.timer = f"retry:{branch.key}:{branch.attempt}"
            self.set_timer(branch.timer, self.now + policy.delay_before(branch.attempt))
            self.note("step_retry", branch.key, attempt=branch.attempt, code=error.code, error=error.message)
            return
        self.note("step_failed", branch.key, attempt=branch.attempt, code=error.code, error=error.message)
        self.finish("failed", None, StepError(code=error.code, message=f"step {branch.key}: {error.message}"))

    def fail(self, code: str, message: str) -> None:
        self.finish("failed", None, StepError(code=code, message=message))

    def finish(self, status: str, output: Any, error: StepError | None) -> None:
        s = self.s
        for branch in list(s.branches.values()):
            step = self.flow.steps.get(branch.step_id) if self.flow is not None else None
            if isinstance(step, CallFlowStep) and branch.task_id is not None:
                self.fx.append(CancelChild(branch.task_id))
        s.branches.clear()
        s.fanout = None
        for timer_id in list(s.timers):
            self.clear_timer(timer_id)
        s.status = status  # type: ignore[assignment]
        s.paused = False
        s.output = output
        s.error = error
        if s.concurrency_key is not None:
            self.fx.append(ReleaseSlot(s.concurrency_key, s.id))
        self.fx.append(Finished(s.id, status, output, error, s.parent, s.schedule_id))
        self.note(status, **({"code": error.code, "error": error.message} if error else {}))

    # -- events ------------------------------------------------------------------------------

    def on_result(self, event: StepResultEvent) -> None:
        branch = self.s.branches.get(event.key)
        if branch is None or branch.attempt != event.attempt or branch.phase == "backoff":
            self.duplicate = True
            self.note("stale_result", event.key, attempt=event.attempt)
            return
        assert self.flow is not None
        step = self.flow.steps[branch.step_id]
        if isinstance(step, DelayStep | WaitForSignalStep):
            self.duplicate = True
            self.note("unexpected_result", event.key)
            return
        if event.ok:
            data = event.data if isinstance(step, TaskStep) and branch.owner is None else None
            self.leaf_done(branch, event.output, data)
        else:
            self.leaf_failed(branch, event.error or StepError())

    def on_timer(self, event: TimerFiredEvent) -> None:
        s = self.s
        if s.timers.pop(event.timer_id, None) is None:
            self.duplicate = True
            return
        self.note("timer_fired", timer=event.timer_id, due=event.due, lateness=round(event.fired_at - event.due, 3))
        if event.timer_id == "deadline":
            self.fail("TIMEOUT", "the instance's deadline passed")
            return
        branch = next((b for b in s.branches.values() if b.timer == event.timer_id), None)
        if branch is None:
            return
        branch.timer = None
        assert self.flow is not None
        step = self.flow.steps[branch.step_id]
        kind = event.timer_id.split(":", 1)[0]
        if kind == "delay":
            self.leaf_done(branch, {"due": event.due, "fired_at": event.fired_at})
        elif kind == "retry":
            if s.paused:
                return  # restarted on resume
            self.restart(branch)
        elif isinstance(step, WaitForSignalStep):
            if step.on_timeout is not None and branch.owner is None:
                s.branches.pop(branch.key, None)
                s.outputs[step.id] = {"timed_out": True}
                self.note("wait_timed_out", branch.key, next=step.on_timeout)
                s.cursor = step.on_timeout
            else:
                self.leaf_failed(branch, StepError(code="TIMEOUT", message=f"no '{step.signal}' signal"), False)
        else:
            if isinstance(step, CallFlowStep) and branch.task_id is not None:
                self.fx.append(CancelChild(branch.task_id))
            self.leaf_failed(
                branch, StepError(code="TIMEOUT", message=f"no result within {event.due - branch.started_at:g}s")
            )

    def restart(self, branch: Branch) -> None:
        assert self.flow is not None
        self.s.branches.pop(branch.key, None)
        self.start_leaf(self.flow.leaf(branch.step_id), branch.key, branch.owner, branch.index, branch.attempt)

    def on_signal(self, event: SignalEvent) -> bool:
        """Apply a signal; False when the state must stay untouched (refused or repeated)."""
        s = self.s
        if event.signal_id in s.signals_seen:
            self.duplicate = True
            return False
        if s.terminal:
            self.fx.append(SignalRejected(s.id, event.signal_id, f"instance is {s.status}"))
            return False
        refusal = self.refusal(event)
        if refusal is not None:
            self.fx.append(SignalRejected(s.id, event.signal_id, refusal))
            return False
        s.signals_seen.append(event.signal_id)
        if len(s.signals_seen) > MAX_SIGNAL_IDS:
            del s.signals_seen[0]
        kind = event.signal
        self.note("signal", signal=kind, name=event.name, signal_id=event.signal_id)
        if kind == "pause":
            s.paused = True
        elif kind == "resume":
            s.paused = False
            for branch in list(s.branches.values()):
                if branch.phase == "backoff" and branch.timer is None:
                    self.restart(branch)
        elif kind == "cancel":
            self.finish("cancelled", None, StepError(code="CANCELLED", message="cancelled by signal"))
        elif kind == "update_context":
            s.context["data"] = merge_patch(s.context.get("data"), event.payload)
        else:
            assert event.name is not None
            waiting = next(
                (b for b in s.branches.values() if b.phase == "waiting" and self._waits_for(b.step_id) == event.name),
                None,
            )
            if waiting is not None:
                self.leaf_done(waiting, event.payload)
            else:
                s.inbox.append(Pending(signal_id=event.signal_id, name=event.name, payload=event.payload))
        return True

    def refusal(self, event: SignalEvent) -> str | None:
        if event.signal == "update_context" and not isinstance(event.payload, dict):
            return "update_context needs an object payload (a JSON merge patch)"
        if event.signal == "custom":
            if not event.name:
                return "a custom signal needs a name"
            waiting = any(self._waits_for(b.step_id) == event.name for b in self.s.branches.values())
            if not waiting and len(self.s.inbox) >= MAX_INBOX:
                return f"too many undelivered signals (max {MAX_INBOX})"
        return None

    def _waits_for(self, step_id: str) -> str | None:
        assert self.flow is not None
        step = self.flow.steps.get(step_id)
        return step.signal if isinstance(step, WaitForSignalStep) else None


def resume_effects(flow: CompiledFlow | None, state: InstanceState) -> list[Effect]:
    """What a new partition owner must redo for an instance it recovered from the changelog.

    Every pending timer is scheduled again (firing is idempotent: a timer fires once per state), and
    work that was in flight is issued again with the same ids: a task step runs again (at-least-once,
    same idempotency key), an external task is published again (same task id), a child start is sent
    again (idempotent). Steps that completed are never redone: their results are in the snapshot.
    """
    effects: list[Effect] = [ScheduleTimer(state.id, t, due) for t, due in state.timers.items()]
    if flow is None or state.terminal:
        return effects
    if not state.admitted and state.concurrency_key is not None and flow.doc.concurrency is not None:
        effects.append(RequestSlot(state.concurrency_key, state.id, flow.doc.concurrency.limit))
    run = _Run(flow, _fork(state), state.updated_at)
    for branch in state.branches.values():
        step = flow.steps.get(branch.step_id)
        if branch.phase == "backoff" or step is None:
            continue
        item = None
        if branch.owner is not None and state.fanout is not None and state.fanout.items and branch.index is not None:
            item = state.fanout.items[branch.index]
        ctx = run.logic_context(branch.index if branch.owner is not None else None, item)
        if isinstance(step, TaskStep) and branch.phase == "running":
            key = f"{state.id}:{branch.key}:{branch.attempt}"
            effects.append(RunTask(state.id, branch.key, step.id, branch.attempt, clone(ctx), key))
        elif isinstance(step, ExternalTaskStep) and branch.task_id is not None:
            rule = flow.logic.get(f"{step.id}.input")
            try:
                payload = rule.evaluate(ctx) if rule is not None else clone(ctx["data"])
            except LogicError:
                continue  # it failed the first time too; the step's timeout (if any) decides
            timeout = flow.timeout.get(step.id)
            deadline = branch.started_at + timeout if timeout is not None else None
            effects.append(
                PublishExternalTask(
                    state.id, branch.task_id, step.handler, branch.key, branch.attempt, payload, deadline
                )
            )
        elif isinstance(step, CallFlowStep) and branch.task_id is not None:
            rule = flow.logic.get(f"{step.id}.input")
            try:
                payload = rule.evaluate(ctx) if rule is not None else clone(ctx["data"])
            except LogicError:
                continue
            effects.append(
                StartChild(state.id, branch.key, branch.attempt, branch.task_id, step.flow_id, step.version, payload)
            )
    return effects
