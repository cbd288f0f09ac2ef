"""Running a `task` step: one engine task function on a copy of the instance context.

Shared by every runtime (the Kafka worker, the in-memory runtime of tests and dry-runs). The
function sees `data`, `metadata` (with `idempotency_key` for connectors), `temp_data` and `outputs`
(earlier steps' outputs, read-only by convention); the step's result carries the new `data`.
"""

from __future__ import annotations

from typing import Any

from app.engine.message import Message
from app.engine.paths import clone
from app.engine.registry import TaskContext
from app.errors import QuasarError
from app.flows.compiler import CompiledFlow
from app.flows.instance import RunTask, StepError, StepResultEvent

__all__ = ["run_task"]


async def run_task(flow: CompiledFlow, effect: RunTask, services: Any = None) -> StepResultEvent:
    """Run the step's function; an exception or a status >= 400 is a failed result (its error code)."""
    workflow = flow.tasks[effect.step_id]
    task = workflow.tasks[0]
    context = clone(effect.context)
    metadata = dict(context.get("metadata") or {})
    metadata["idempotency_key"] = effect.idempotency_key
    message = Message(None, data=context.get("data"), metadata=metadata, id=effect.idempotency_key)
    message.context["temp_data"] = context.get("temp_data") or {}
    message.context["outputs"] = context.get("outputs") or {}
    ctx = TaskContext(f"flow:{flow.id}", services=services)
    ctx.workflow_id = workflow.id
    ctx.task_id = task.id

    def failed(code: str, text: str) -> StepResultEvent:
        return StepResultEvent(
            instance_id=effect.instance_id,
            key=effect.key,
            attempt=effect.attempt,
            ok=False,
            error=StepError(code=code[:64], message=text[:4096]),
        )

    try:
        status = await task.function.arun(message, ctx)
    except QuasarError as exc:
        return failed(exc.code, exc.message)
    except Exception as exc:
        return failed("TASK_ERROR", f"{type(exc).__name__}: {exc}")
    if status >= 400:  # unlike a channel workflow, a flow step does not go on past a failed task
        recorded = message.errors[-1] if message.errors else None
        code = str(recorded["code"]) if recorded else f"STATUS_{status}"
        text = str(recorded["message"]) if recorded else ctx.reason or f"task failed with status {status}"
        return failed(code, text)
    return StepResultEvent(
        instance_id=effect.instance_id,
        key=effect.key,
        attempt=effect.attempt,
        ok=True,
        output={"status": status},
        data=message.context["data"],
    )
