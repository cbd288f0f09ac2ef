"""Workflow selection and execution, exactly as Orion does it (§1b, §1e, §1f).

- All workflows bound to a channel are tried in ascending priority (stable); every one whose
  condition is exactly `true` runs (not first-match), sharing one message.
- Tasks run in order, each gated by its own strict-true condition (evaluation error = false).
- Task errors push `TASK_ERROR`; task `continue_on_error` goes on, else the workflow fails.
  A failing workflow with `continue_on_error` pushes `WORKFLOW_ERROR` and the next workflow runs;
  otherwise the whole run fails with `ValidationFailed` (400), `Timeout` (504) or
  `EngineFailure` (500, "An internal engine error occurred").
- Quasar fix of quirk 5: a status >= 500 under task `continue_on_error` records a `TASK_ERROR`.
- Rollout: each channel entry owns a bucket range `[lo, hi)`; the bucket comes from `RunOptions`
  and is never written into `data` (fix of quirk 15).

When no task on a channel is asynchronous the whole run is plain synchronous code: no `await`
per task, no per-task allocations beyond the audit entry Orion requires.
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from app.engine.budget import WorkBudget
from app.engine.compiler import CompiledWorkflow
from app.engine.message import AuditEntry, Message, rfc3339
from app.engine.registry import FunctionRegistry, TaskContext
from app.engine.rules.ruleset import RulesetLookup
from app.errors import EngineFailure, NotFound, QuasarError, Timeout, ValidationFailed

__all__ = [
    "ENGINE_VERSION",
    "ChannelWorkflow",
    "Engine",
    "RunOptions",
    "map_engine_error",
    "rollout_bucket",
]

try:
    ENGINE_VERSION = version("quasar")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    ENGINE_VERSION = "0.0.0"

FILTER_HALT = 299
FILTER_SKIP = 298
_NO_CHANGES: tuple[tuple[str, Any, Any], ...] = ()  # immutable: shared by every entry without changes


@dataclass(frozen=True, slots=True)
class ChannelWorkflow:
    """One workflow bound to a channel with its rollout bucket range `[lo, hi)` (0..100)."""

    workflow: CompiledWorkflow
    rollout: tuple[int, int] = (0, 100)

    def __post_init__(self) -> None:
        lo, hi = self.rollout
        if not 0 <= lo <= hi <= 100:
            raise ValueError(f"rollout range must satisfy 0 <= lo <= hi <= 100, got {self.rollout}")


@dataclass(slots=True)
class RunOptions:
    """Per-message options. `deadline` is epoch seconds; `services` is handed to connector functions."""

    rollout_bucket: int | None = None
    deadline: float | None = None
    services: Any = None
    # dry-run / tracing: when set, the executor appends one step per workflow/task here
    steps: list[dict[str, Any]] | None = None
    calls: list[dict[str, Any]] | None = field(default=None)
    # The request's work budget, shared by its channel_calls (None: a fresh one with the defaults).
    budget: WorkBudget | None = None
    # Whether the audit entries of generated (inlined) tasks carry their changes. False where nothing
    # reads them (the worker's channels without per-task traces: the trail only feeds metrics); the
    # interpreter and dry-runs always record them.
    changes: bool = True


_DEFAULT_OPTIONS = RunOptions()


def rollout_bucket(key: str | bytes) -> int:
    """A sticky bucket 0..99 for a request key (same key, same bucket, on every instance)."""
    raw = key.encode() if isinstance(key, str) else key
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big") % 100


def map_engine_error(exc: BaseException) -> QuasarError:
    """Orion's engine-error -> HTTP mapping. Only validation and timeout keep their message."""
    if isinstance(exc, ValidationFailed | Timeout):
        return exc
    if isinstance(exc, QuasarError) and (exc.status != 500 or exc.expose_message):
        return exc  # runtime conditions such as CircuitOpen (503) or an unset env var keep their meaning
    err = EngineFailure("An internal engine error occurred")
    err.__cause__ = exc
    return err


class _WorkflowFailed(Exception):
    def __init__(self, error: BaseException, text: str) -> None:
        super().__init__(text)
        self.error = error
        self.text = text


class _Entry:
    __slots__ = ("hi", "lo", "partial", "workflow")

    def __init__(self, cw: ChannelWorkflow) -> None:
        self.workflow = cw.workflow
        self.lo, self.hi = cw.rollout
        self.partial = (self.lo, self.hi) != (0, 100)


class _Channel:
    __slots__ = ("entries", "is_async", "name", "needs_context", "partial")

    def __init__(self, name: str, entries: Iterable[ChannelWorkflow | CompiledWorkflow]) -> None:
        items = [e if isinstance(e, ChannelWorkflow) else ChannelWorkflow(e) for e in entries]
        items.sort(key=lambda e: e.workflow.priority)  # stable: equal priorities keep their order
        self.name = name
        self.entries = tuple(_Entry(e) for e in items)
        self.is_async = any(e.workflow.is_async for e in self.entries)
        self.partial = any(e.partial for e in self.entries)
        self.needs_context = any(e.workflow.needs_context for e in self.entries)


class Engine:
    """Channels -> compiled workflows. Immutable; build a new one per config change."""

    def __init__(
        self,
        channels: Mapping[str, Sequence[ChannelWorkflow | CompiledWorkflow]],
        registry: FunctionRegistry | None = None,
        *,
        rulesets: RulesetLookup | None = None,
        generated: bool = True,
    ) -> None:
        # Workflows arrive compiled; the registry is kept for callers that compile more (channel_call).
        self.registry = registry
        # Where `rule` tasks find rulesets named by id (the config snapshot's catalog).
        self.rulesets = rulesets
        # False: every run interprets its tasks (the reference the generated code is tested against)
        self.generated = generated
        self._channels = {name: _Channel(name, entries) for name, entries in channels.items()}
        # the channels `process_sync` can run: one set test where `is_sync` is two calls (a worker asks per record)
        self.sync_channels = frozenset(name for name, ch in self._channels.items() if not ch.is_async)

    @property
    def channels(self) -> list[str]:
        return sorted(self._channels)

    def has_channel(self, channel: str) -> bool:
        return channel in self._channels

    def workflows(self, channel: str) -> list[CompiledWorkflow]:
        """The channel's workflows in execution order."""
        return [e.workflow for e in self._get(channel).entries]

    def is_sync(self, channel: str) -> bool:
        """True when `process_sync` can run this channel (no asynchronous task)."""
        return not self._get(channel).is_async

    def _get(self, channel: str) -> _Channel:
        ch = self._channels.get(channel)
        if ch is None:
            raise NotFound(f"Channel '{channel}' not found")
        return ch

    def _start(self, ch: _Channel, message: Message, opts: RunOptions) -> tuple[TaskContext, int | None]:
        _stamp(ch, message)
        ctx = self._context(ch, opts)
        return ctx, _bucket(ch, opts)

    # -- shared per-task bookkeeping (kept out of the loops so both paths behave the same) ------

    @staticmethod
    def _task_raised(
        message: Message, wf: CompiledWorkflow, task: Any, exc: BaseException, steps: list[dict[str, Any]] | None
    ) -> None:
        if steps is not None:
            steps.append(_step(wf.id, task.id, "executed", 500, str(exc)))
        text = f"Task {task.id} error: {exc}"
        message.add_error("TASK_ERROR", text, workflow_id=wf.id, task_id=task.id)
        _record(message, wf.id, task.id, _NO_CHANGES, 500)
        if not task.continue_on_error:
            raise _WorkflowFailed(exc, str(exc))

    @staticmethod
    def _task_failed_status(message: Message, wf: CompiledWorkflow, task: Any, status: int, reason: str | None) -> None:
        text = f"Task {task.id} failed with status {status}" + (f": {reason}" if reason else "")
        if task.continue_on_error:
            # Quasar fix of quirk 5: Orion continues silently; we record why.
            message.add_error("TASK_ERROR", text, workflow_id=wf.id, task_id=task.id)
            return
        raise _WorkflowFailed(EngineFailure(text), text)

    @staticmethod
    def _workflow_failed(message: Message, wf: CompiledWorkflow, failure: _WorkflowFailed) -> None:
        if wf.continue_on_error:
            message.add_error("WORKFLOW_ERROR", f"Workflow {wf.id} error: {failure.text}", workflow_id=wf.id)
            return
        raise map_engine_error(failure.error) from failure.error

    @staticmethod
    def _workflow_selected(
        entry: _Entry, bucket: int | None, context: dict[str, Any], steps: list[dict[str, Any]] | None
    ) -> bool:
        """Whether a channel entry runs: its rollout range holds the bucket and its condition is strictly true."""
        if entry.partial and not (entry.lo <= bucket < entry.hi):  # type: ignore[operator]
            return False
        wf = entry.workflow
        if wf.always or wf.condition.is_true(context):
            return True
        if steps is not None:
            steps.append({"workflow_id": wf.id, "task_id": None, "result": "skipped"})
        return False

    # -- the synchronous fast path --------------------------------------------------------------

    def process_sync(self, channel: str, message: Message, options: RunOptions | None = None) -> Message:
        """Run a channel whose tasks are all synchronous; raises `RuntimeError` otherwise."""
        ch = self._channels.get(channel)
        if ch is None:
            raise NotFound(f"Channel '{channel}' not found")
        if ch.is_async:
            raise RuntimeError(f"channel '{channel}' has asynchronous tasks; use `await Engine.process`")
        opts = options or _DEFAULT_OPTIONS
        if opts.steps is None and self.generated:
            self._run_generated(ch, message, opts)  # the worker's path for every record: one call less
        else:
            self._run_sync(ch, message, opts)
        return message

    def _run_sync(self, ch: _Channel, message: Message, opts: RunOptions) -> None:
        if opts.steps is None and self.generated:
            self._run_generated(ch, message, opts)
            return
        ctx, bucket = self._start(ch, message, opts)
        context = message.context
        steps = opts.steps
        for entry in ch.entries:
            wf = entry.workflow
            if not self._workflow_selected(entry, bucket, context, steps):
                continue
            ctx.workflow_id = wf.id
            try:
                self._tasks_sync(wf, message, ctx, steps)
            except _WorkflowFailed as failure:
                self._workflow_failed(message, wf, failure)

    def _tasks_sync(
        self, wf: CompiledWorkflow, message: Message, ctx: TaskContext, steps: list[dict[str, Any]] | None
    ) -> None:
        context = message.context
        for i, task in enumerate(wf.tasks):
            if not self._task_starts(wf, task, context, ctx, steps):
                continue
            try:
                status = task.function.run(message, ctx)
            except Exception as exc:
                self._task_raised(message, wf, task, exc, steps)
                continue
            if self._task_finished(message, wf, i, status, ctx, steps):
                return

    def _run_generated(self, ch: _Channel, message: Message, opts: RunOptions) -> None:
        """`_run_sync` with each workflow's tasks as generated code (codegen.py); no step trace.

        The `TaskContext` is only built when a task calls a function through `run`. `_stamp`, `_bucket` and
        `_workflow_selected` are inlined: this runs for every record a worker processes.
        """
        context = message.context
        meta = context["metadata"]
        meta["processed_at"] = rfc3339()
        meta["engine_version"] = ENGINE_VERSION
        meta["channel"] = ch.name
        ctx: TaskContext | None = None
        if ch.needs_context:
            ctx = self._context(ch, opts)
            budget = ctx.budget
        else:
            budget = opts.budget if opts.budget is not None else WorkBudget()
        bucket = opts.rollout_bucket
        if bucket is None and ch.partial:
            bucket = random.randrange(100)  # no sticky key given: Orion's per-request random split
        deadline = opts.deadline
        changes = opts.changes
        for entry in ch.entries:
            if entry.partial and not (entry.lo <= bucket < entry.hi):  # type: ignore[operator]
                continue
            wf = entry.workflow
            if not (wf.always or wf.condition.is_true(context)):
                continue
            runner = wf.task_runner(changes)
            if runner is None and ctx is None:  # interpreted: it needs a context after all
                ctx = self._context(ch, opts)
                ctx.budget = budget
            if ctx is not None:
                ctx.workflow_id = wf.id
            try:
                if runner is not None:
                    runner(message, ctx, deadline, budget)
                else:
                    assert ctx is not None
                    self._tasks_sync(wf, message, ctx, None)
            except _WorkflowFailed as failure:
                self._workflow_failed(message, wf, failure)

    def _context(self, ch: _Channel, opts: RunOptions) -> TaskContext:
        return TaskContext(
            ch.name, services=opts.services, deadline=opts.deadline, engine=self, calls=opts.calls, budget=opts.budget
        )

    # -- the general (async) path ---------------------------------------------------------------

    async def process(self, channel: str, message: Message, options: RunOptions | None = None) -> Message:
        """Run every matching workflow of `channel` on `message` (mutated in place and returned)."""
        ch = self._get(channel)
        opts = options or _DEFAULT_OPTIONS
        if not ch.is_async:
            self._run_sync(ch, message, opts)
            return message
        ctx, bucket = self._start(ch, message, opts)
        context = message.context
        steps = opts.steps
        for entry in ch.entries:
            wf = entry.workflow
            if not self._workflow_selected(entry, bucket, context, steps):
                continue
            ctx.workflow_id = wf.id
            try:
                if wf.is_async:
                    await self._tasks_async(wf, message, ctx, steps)
                elif steps is None and self.generated and (runner := wf.task_runner(opts.changes)) is not None:
                    runner(message, ctx, ctx.deadline, ctx.budget)
                else:
                    self._tasks_sync(wf, message, ctx, steps)
            except _WorkflowFailed as failure:
                self._workflow_failed(message, wf, failure)
        return message

    async def _tasks_async(
        self, wf: CompiledWorkflow, message: Message, ctx: TaskContext, steps: list[dict[str, Any]] | None
    ) -> None:
        context = message.context
        for i, task in enumerate(wf.tasks):
            if not self._task_starts(wf, task, context, ctx, steps):
                continue
            try:
                if task.is_async:
                    status = await task.function.arun(message, ctx)
                else:
                    status = task.function.run(message, ctx)
            except Exception as exc:
                self._task_raised(message, wf, task, exc, steps)
                continue
            if self._task_finished(message, wf, i, status, ctx, steps):
                return

    # -- one task's bookkeeping, shared by both paths ---------------------------------------------

    @staticmethod
    def _task_starts(
        wf: CompiledWorkflow, task: Any, context: dict[str, Any], ctx: TaskContext, steps: list[dict[str, Any]] | None
    ) -> bool:
        """Whether `task` runs: its strict-true condition holds and the deadline has not passed."""
        if not (task.always or task.condition.is_true(context)):
            if steps is not None:
                steps.append(_step(wf.id, task.id, "skipped"))
            return False
        deadline = ctx.deadline
        if deadline is not None and time.time() > deadline:
            raise _WorkflowFailed(Timeout("Deadline exceeded before task " + task.id), "deadline exceeded")
        # Spent budget fails the whole run (not just this workflow): the record goes no further.
        ctx.budget.check_time("task " + task.id)
        ctx.task_id = task.id
        ctx.reason = None
        ctx.changes = _NO_CHANGES
        return True

    def _task_finished(
        self,
        message: Message,
        wf: CompiledWorkflow,
        i: int,
        status: int,
        ctx: TaskContext,
        steps: list[dict[str, Any]] | None,
    ) -> bool:
        """Record task `i`'s status; True when a filter halted the rest of the workflow."""
        task = wf.tasks[i]
        if steps is not None:
            steps.append(_step(wf.id, task.id, "executed", status, ctx.reason))
        if status == FILTER_SKIP:
            return False
        _record(message, wf.id, task.id, ctx.changes, status)
        if status == FILTER_HALT:
            if steps is not None:
                steps.extend(_step(wf.id, t.id, "skipped", None, "halted by filter") for t in wf.tasks[i + 1 :])
            return True
        if status >= 500:
            self._task_failed_status(message, wf, task, status, ctx.reason)
        return False


def _stamp(ch: _Channel, message: Message) -> None:
    meta = message.context["metadata"]
    meta["processed_at"] = rfc3339()
    meta["engine_version"] = ENGINE_VERSION
    meta["channel"] = ch.name


def _bucket(ch: _Channel, opts: RunOptions) -> int | None:
    bucket = opts.rollout_bucket
    if bucket is None and ch.partial:
        bucket = random.randrange(100)  # no sticky key given: Orion's per-request random split
    return bucket


def _record(
    message: Message, workflow_id: str, task_id: str, changes: Sequence[tuple[str, Any, Any]], status: int
) -> None:
    message.audit_trail.append(AuditEntry(workflow_id, task_id, status, time.time(), changes))
    message.context["metadata"]["progress"] = {
        "workflow_id": workflow_id,
        "task_id": task_id,
        "status_code": status,
    }


def _step(
    workflow_id: str, task_id: str, result: str, status: int | None = None, message: str | None = None
) -> dict[str, Any]:
    step: dict[str, Any] = {"workflow_id": workflow_id, "task_id": task_id, "result": result}
    if status is not None:
        step["status"] = status
    if message:
        step["message"] = message
    return step
