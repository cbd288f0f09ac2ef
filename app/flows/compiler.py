"""Flow and schedule documents -> compiled, validated objects (JSONLogic and task functions once).

Every problem is reported as `{"field", "message"}` with a path into the document
(`steps[2].delay.timezone`), all of them at once, as `FlowInvalid` (HTTP 400).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from app.engine.compiler import CompiledWorkflow, analyse
from app.engine.jsonlogic import Logic, check_logic, compile_logic
from app.engine.registry import FunctionRegistry
from app.errors import ValidationFailed
from app.flows.cron import CronSpec, compile_cron
from app.flows.models import (
    CallFlowStep,
    DelayStep,
    ExternalTaskStep,
    FlowDoc,
    ForEachStep,
    ParallelStep,
    RetryPolicy,
    RouterStep,
    ScheduleDoc,
    Step,
    TaskStep,
    TerminalStep,
    WaitForSignalStep,
)
from app.flows.timing import TimingError, parse_duration, parse_instant, zone

__all__ = [
    "CompiledFlow",
    "CompiledRetry",
    "CompiledSchedule",
    "FlowInvalid",
    "compile_flow",
    "compile_schedule",
]

Leaf = TaskStep | DelayStep | WaitForSignalStep | ExternalTaskStep | CallFlowStep


class FlowInvalid(ValidationFailed):
    """A flow or schedule document cannot be compiled; `errors` = `[{"field", "message"}]` (400)."""

    def __init__(self, errors: list[dict[str, str]], what: str = "flow") -> None:
        first = f"{errors[0]['field']}: {errors[0]['message']}" if errors else f"invalid {what}"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(f"Invalid {what}: {first}{more}", details={"errors": errors})
        self.errors = errors


@dataclass(frozen=True, slots=True)
class CompiledRetry:
    max_attempts: int = 1
    backoff: float = 1.0
    multiplier: float = 2.0
    max_backoff: float = 3600.0
    retry_on: frozenset[str] = frozenset()

    def delay_before(self, attempt: int) -> float:
        """Backoff before `attempt` (2 = the first retry)."""
        return min(self.backoff * self.multiplier ** max(attempt - 2, 0), self.max_backoff)

    def retries(self, attempt: int, code: str) -> bool:
        return attempt < self.max_attempts and (not self.retry_on or code in self.retry_on)


_NO_RETRY = CompiledRetry()


@dataclass(slots=True)
class CompiledFlow:
    """A validated flow version: steps by id, the step order, and everything compiled once."""

    doc: FlowDoc
    steps: dict[str, Step] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    logic: dict[str, Logic] = field(default_factory=dict)  # "<step id>.<purpose>" -> rule
    tasks: dict[str, CompiledWorkflow] = field(default_factory=dict)  # task step id -> one-task workflow
    retry: dict[str, CompiledRetry] = field(default_factory=dict)
    timeout: dict[str, float] = field(default_factory=dict)
    durations: dict[str, float] = field(default_factory=dict)  # delay durations / jitter by step id
    instance_timeout: float | None = None
    concurrency_key: Logic | None = None

    @property
    def id(self) -> str:
        return self.doc.flow_id

    @property
    def version(self) -> int:
        return self.doc.version

    def following(self, step_id: str) -> str | None:
        """Where to go after `step_id` completes: its `next`, else the next step in the list."""
        step = self.steps[step_id]
        explicit = getattr(step, "next", None)
        if explicit:
            return str(explicit)
        position = self.order.index(step_id)
        return self.order[position + 1] if position + 1 < len(self.order) else None

    def leaf(self, step_id: str) -> Leaf:
        step = self.steps[step_id]
        assert not isinstance(step, RouterStep | TerminalStep | ForEachStep | ParallelStep)
        return step

    def retry_of(self, step_id: str) -> CompiledRetry:
        return self.retry.get(step_id, _NO_RETRY)


_STEP_TAGS = frozenset(
    {"task", "delay", "wait_for_signal", "external_task", "call_flow", "router", "terminal", "for_each", "parallel"}
)


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    previous: int | str | None = None
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not (isinstance(previous, int) and part in _STEP_TAGS):  # pydantic's union tag adds nothing
            out += ("." if out else "") + str(part)
        previous = part
    return out or "(document)"


def _pydantic_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": _loc(tuple(e["loc"])), "message": "is required" if e["type"] == "missing" else e["msg"]}
        for e in exc.errors()
    ]


def compile_flow(
    doc: Mapping[str, Any] | FlowDoc, registry: FunctionRegistry | None = None, *, recording: bool = False
) -> CompiledFlow:
    """Validate and compile a flow; raises `FlowInvalid` listing every problem."""
    if isinstance(doc, FlowDoc):
        model = doc
    else:
        if not isinstance(doc, Mapping):
            raise FlowInvalid([{"field": "(document)", "message": "a flow must be a JSON object"}])
        try:
            model = FlowDoc.model_validate(dict(doc))
        except ValidationError as exc:
            raise FlowInvalid(_pydantic_errors(exc)) from None
    if registry is None:
        from app.engine.functions import shared_default_registry

        registry = shared_default_registry()
    errors: list[dict[str, str]] = []
    flow = CompiledFlow(doc=model)

    def err(where: str, message: str) -> None:
        errors.append({"field": where, "message": message})

    def logic(rule: Any, key: str, where: str) -> None:
        problems, _ = check_logic(rule)
        for problem in problems:
            err(where, f"invalid JSONLogic: {problem}")
        if not problems:
            flow.logic[key] = compile_logic(rule)

    def duration(value: Any, where: str) -> float | None:
        try:
            return parse_duration(value)
        except TimingError as exc:
            err(where, str(exc))
            return None

    def retry(policy: RetryPolicy | None, step_id: str, where: str) -> None:
        if policy is None:
            return
        backoff = duration(policy.backoff, f"{where}.retry.backoff")
        ceiling = duration(policy.max_backoff, f"{where}.retry.max_backoff")
        if backoff is not None and ceiling is not None:
            flow.retry[step_id] = CompiledRetry(
                policy.max_attempts, backoff, policy.multiplier, ceiling, frozenset(policy.retry_on)
            )

    def leaf(step: Leaf, where: str, nested: bool) -> None:
        retry(step.retry, step.id, where)
        if step.timeout is not None:
            seconds = duration(step.timeout, f"{where}.timeout")
            if seconds is not None:
                flow.timeout[step.id] = seconds
        if isinstance(step, TaskStep):
            workflow = {"id": f"{model.flow_id}.{step.id}", "name": step.id, "tasks": [_task_of(step)]}
            compiled, problems, _ = analyse(workflow, registry, recording=recording)
            for problem in problems:
                err(f"{where}.{problem['field'].removeprefix('tasks[0].')}", problem["message"])
            if compiled is not None:
                flow.tasks[step.id] = compiled
        elif isinstance(step, DelayStep):
            spec = step.delay
            tz = None
            try:
                tz = zone(spec.timezone)
            except TimingError as exc:
                err(f"{where}.delay.timezone", str(exc))
            if spec.duration is not None:
                seconds = duration(spec.duration, f"{where}.delay.duration")
                if seconds is not None:
                    flow.durations[step.id] = seconds
                    if spec.business_days is not None and seconds % 86400:
                        err(f"{where}.delay.duration", "with business_days, a duration is whole days (e.g. 3d)")
            if spec.until is not None and tz is not None:
                try:
                    parse_instant(spec.until, tz)
                except TimingError as exc:
                    err(f"{where}.delay.until", str(exc))
            if spec.until_logic is not None:
                logic(spec.until_logic, f"{step.id}.until", f"{where}.delay.until_logic")
            if spec.jitter is not None:
                jitter = duration(spec.jitter, f"{where}.delay.jitter")
                if jitter is not None:
                    flow.durations[f"{step.id}.jitter"] = jitter
            if spec.business_days is not None and len(set(spec.business_days.weekend)) >= 7:
                err(f"{where}.delay.business_days.weekend", "at least one weekday must be a business day")
        elif isinstance(step, WaitForSignalStep):
            if step.on_timeout is not None and nested:
                err(f"{where}.on_timeout", "a wait inside for_each/parallel cannot jump; omit on_timeout")
            if step.on_timeout is not None and step.timeout is None:
                err(f"{where}.on_timeout", "on_timeout needs a timeout")
        elif isinstance(step, ExternalTaskStep | CallFlowStep):
            if step.input is not None:
                logic(step.input, f"{step.id}.input", f"{where}.input")
            if isinstance(step, CallFlowStep) and step.flow_id == model.flow_id:
                err(f"{where}.flow_id", "a flow cannot call itself")

    seen: dict[str, str] = {}

    def register(step_id: str, where: str) -> None:
        if step_id in seen:
            err(f"{where}.id", f"duplicate step id '{step_id}' (also {seen[step_id]})")
        else:
            seen[step_id] = where

    for i, step in enumerate(model.steps):
        where = f"steps[{i}]"
        register(step.id, where)
        flow.steps[step.id] = step
        flow.order.append(step.id)
        if isinstance(step, RouterStep):
            for b, branch in enumerate(step.branches):
                logic(branch.condition, f"{step.id}.branch{b}", f"{where}.branches[{b}].condition")
        elif isinstance(step, TerminalStep):
            if step.output is not None:
                logic(step.output, f"{step.id}.output", f"{where}.output")
        elif isinstance(step, ForEachStep):
            logic(step.items, f"{step.id}.items", f"{where}.items")
            register(step.do.id, f"{where}.do")
            flow.steps[step.do.id] = step.do
            leaf(step.do, f"{where}.do", nested=True)
        elif isinstance(step, ParallelStep):
            for j, sub in enumerate(step.steps):
                register(sub.id, f"{where}.steps[{j}]")
                flow.steps[sub.id] = sub
                leaf(sub, f"{where}.steps[{j}]", nested=True)
        else:
            leaf(step, where, nested=False)

    top_level = set(flow.order)
    for i, step in enumerate(model.steps):
        where = f"steps[{i}]"
        targets: list[tuple[str, str | None]] = []
        if isinstance(step, RouterStep):
            targets += [(f"{where}.branches[{b}].next", br.next) for b, br in enumerate(step.branches)]
            targets.append((f"{where}.default", step.default))
        elif isinstance(step, WaitForSignalStep):
            targets.append((f"{where}.on_timeout", step.on_timeout))
        if not isinstance(step, TerminalStep | RouterStep):
            targets.append((f"{where}.next", step.next))
        for target_field, target in targets:
            if target is not None and target not in top_level:
                err(target_field, f"unknown step '{target}' (targets must be top-level step ids)")

    if model.timeout is not None:
        flow.instance_timeout = duration(model.timeout, "timeout")
    if model.concurrency is not None:
        problems, _ = check_logic(model.concurrency.key)
        for problem in problems:
            err("concurrency.key", f"invalid JSONLogic: {problem}")
        if not problems:
            flow.concurrency_key = compile_logic(model.concurrency.key)
    if errors:
        raise FlowInvalid(errors)
    return flow


def _task_of(step: TaskStep) -> dict[str, Any]:
    return {"id": step.id, "name": step.name or step.id, "function": step.function.model_dump()}


@dataclass(frozen=True, slots=True)
class CompiledSchedule:
    doc: ScheduleDoc
    cron: CronSpec
    catch_up: float

    @property
    def id(self) -> str:
        return self.doc.schedule_id


def compile_schedule(doc: Mapping[str, Any] | ScheduleDoc) -> CompiledSchedule:
    """Validate a schedule (cron fields, timezone, catch-up horizon); raises `FlowInvalid`."""
    try:
        model = doc if isinstance(doc, ScheduleDoc) else ScheduleDoc.model_validate(dict(doc))
    except ValidationError as exc:
        raise FlowInvalid(_pydantic_errors(exc), "schedule") from None
    except TypeError:
        raise FlowInvalid(
            [{"field": "(document)", "message": "a schedule must be a JSON object"}], "schedule"
        ) from None
    errors: list[dict[str, str]] = []
    cron: CronSpec | None = None
    try:
        zone(model.timezone)
    except TimingError as exc:
        errors.append({"field": "timezone", "message": str(exc)})
    else:
        try:
            cron = compile_cron(model.cron, model.timezone)
        except TimingError as exc:
            errors.append({"field": "cron", "message": str(exc)})
    catch_up = 0.0
    try:
        catch_up = parse_duration(model.catch_up)
    except TimingError as exc:
        errors.append({"field": "catch_up", "message": str(exc)})
    if errors or cron is None:
        raise FlowInvalid(errors, "schedule")
    return CompiledSchedule(model, cron, catch_up)
