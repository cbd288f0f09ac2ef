"""Dry-run: the same engine, side-effecting functions replaced by recorders, plus a step trace."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from app.engine.compiler import CompiledWorkflow, compile_workflow
from app.engine.executor import ChannelWorkflow, Engine, RunOptions
from app.engine.message import Message
from app.engine.models import WorkflowDoc
from app.engine.registry import FunctionRegistry
from app.engine.rules.ruleset import RulesetLookup
from app.errors import QuasarError

__all__ = ["dry_run", "dry_run_async"]

_DRY_CHANNEL = "__dry_run__"


def _prepare(
    workflow: CompiledWorkflow | WorkflowDoc | Mapping[str, Any], registry: FunctionRegistry | None
) -> CompiledWorkflow:
    if isinstance(workflow, CompiledWorkflow):
        if workflow.recording:
            return workflow
        return compile_workflow(workflow.doc, registry or workflow.registry, recording=True)
    return compile_workflow(workflow, registry, recording=True)


def _report(wf: CompiledWorkflow, message: Message, opts: RunOptions, error: QuasarError | None) -> dict[str, Any]:
    steps = opts.steps or []
    calls = opts.calls or []
    by_task = {(c["workflow_id"], c["task_id"]): c for c in calls}
    for step in steps:
        call = by_task.get((step["workflow_id"], step["task_id"]))
        if call is not None:
            step["would_call"] = {"function": call["function"], "input": call["input"]}
    matched = not (len(steps) == 1 and steps[0]["task_id"] is None)
    report: dict[str, Any] = {
        "matched": matched and bool(steps),
        "trace": {"steps": steps},
        "output": message.context["data"],
        "errors": message.errors,
    }
    if message.explain:
        report["decisions"] = message.explain  # decision paths of decision_table / rule tasks
    if error is not None:
        report["error"] = {"code": error.code, "message": error.message, "status": error.status}
    return report


async def dry_run_async(
    workflow: CompiledWorkflow | WorkflowDoc | Mapping[str, Any],
    data: Any,
    metadata: dict[str, Any] | None = None,
    *,
    registry: FunctionRegistry | None = None,
    services: Any = None,
    rulesets: RulesetLookup | None = None,
) -> dict[str, Any]:
    """Async form of `dry_run` (for custom asynchronous functions without side effects)."""
    wf = _prepare(workflow, registry)
    engine = Engine({_DRY_CHANNEL: [ChannelWorkflow(wf)]}, rulesets=rulesets)
    message = Message.from_request(data, metadata)
    message.explain = []
    opts = RunOptions(rollout_bucket=0, services=services, steps=[], calls=[])
    error: QuasarError | None = None
    try:
        await engine.process(_DRY_CHANNEL, message, opts)
    except QuasarError as exc:
        error = exc
    return _report(wf, message, opts, error)


def dry_run(
    workflow: CompiledWorkflow | WorkflowDoc | Mapping[str, Any],
    data: Any,
    metadata: dict[str, Any] | None = None,
    *,
    registry: FunctionRegistry | None = None,
    rulesets: RulesetLookup | None = None,
) -> dict[str, Any]:
    """Run one workflow alone (even a draft) on `{data, metadata}` without side effects.

    Returns `{"matched", "trace": {"steps": [{workflow_id, task_id|null, result, status?,
    message?, would_call?}]}, "output", "errors"}` plus `"error"` when the run failed (the
    output then holds the partial data) and `"decisions"` (decision paths) when rule functions ran.
    `rulesets`: where `rule` tasks find rulesets named by id. Raises `WorkflowInvalid` for an invalid
    document.
    """
    wf = _prepare(workflow, registry)
    if not wf.is_async:
        engine = Engine({_DRY_CHANNEL: [ChannelWorkflow(wf)]}, rulesets=rulesets)
        message = Message.from_request(data, metadata)
        message.explain = []
        opts = RunOptions(rollout_bucket=0, steps=[], calls=[])
        error: QuasarError | None = None
        try:
            engine.process_sync(_DRY_CHANNEL, message, opts)
        except QuasarError as exc:
            error = exc
        return _report(wf, message, opts, error)
    return asyncio.run(dry_run_async(wf, data, metadata, registry=registry, rulesets=rulesets))
