"""The HTTP task bridge: flows' external tasks for workers that cannot speak Kafka (docs/flows.md).

    POST /api/v1/tasks/{handler}/poll       {"wait_ms"?, "lease_ms"?} -> 200 a task (leased) | 204 none
    POST /api/v1/tasks/{task_id}/complete   {"output"?, "handler"?}   -> 202
    POST /api/v1/tasks/{task_id}/fail       {"error": {"code", "message"}, "handler"?} -> 202

Authentication is the admin API's; the routes need the `work` permission (role `worker`, or `admin`),
and a scoped key's `ids` globs name the handlers it may work for. The Kafka side is `TaskBridge`.
"""

from __future__ import annotations

import re
import time
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from app.errors import BadRequest, Conflict, Forbidden, NotFound, RateLimited, ServiceUnavailable
from app.flow_runtime.catalog import FlowCatalog
from app.flows.instance import StepError
from app.flows.models import HANDLER, ExternalTaskStep
from app.gateway.admin import _authenticate
from app.gateway.flows import Flows, FlowService, _config_state, _data, _json
from app.identity import Principal
from app.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/tasks", tags=["Task bridge"], dependencies=[Depends(_authenticate)])
_HANDLER = re.compile(HANDLER)
_VIEW_GRACE_S = 2.0  # a task handed out by another gateway: its state may reach this view a moment later


class PollRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    wait_ms: int = Field(default=20_000, ge=0, description="Long-poll up to this long (capped by the setting)")
    lease_ms: int = Field(
        default=60_000,
        ge=1_000,
        le=3_600_000,
        description="Offered again to the next poll if no result comes within this long (and before its deadline)",
    )


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    output: Any = None
    handler: str | None = Field(default=None, description="If given, must be the task's handler")


class FailRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    error: StepError
    handler: str | None = None


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    if settings.task_bridge_max_polls <= 0:
        raise ServiceUnavailable("the task bridge is off on this gateway (QUASAR_TASK_BRIDGE_MAX_POLLS=0)")
    return settings


def _check_scope(request: Request, handler: str) -> None:
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is not None and not principal.may_write(handler):
        raise Forbidden(f"{principal.name} may not work on tasks of handler {handler!r} (outside its scope)")


@router.post("/{handler}/poll", summary="Long-poll for the next external task of a handler (204: none)")
async def poll_task(handler: str, request: Request, flows: FlowService = Flows) -> Response:
    settings = _settings(request)
    body: PollRequest = await _json(request, PollRequest)
    if not _HANDLER.match(handler):
        raise BadRequest(f"handler {handler!r} must match {HANDLER}")
    _check_scope(request, handler)
    if handler not in FlowCatalog(_config_state(request)).handlers():
        raise NotFound(f"no active flow has an external_task for handler {handler!r}")
    bridge = flows.bridge
    if bridge.polling >= settings.task_bridge_max_polls:
        raise RateLimited(
            f"{bridge.polling} polls wait on this gateway (at most {settings.task_bridge_max_polls}): retry later"
        )
    wait = min(body.wait_ms, settings.task_bridge_max_wait_ms) / 1000
    task = await bridge.take(handler, wait, body.lease_ms / 1000)
    if task is None:
        return Response(status_code=204)
    return _data({**task.envelope, "lease_until": task.lease_until})


@router.post("/{task_id}/complete", status_code=202, summary="Complete a task taken from the bridge")
async def complete_task(task_id: str, request: Request, flows: FlowService = Flows) -> Response:
    settings = _settings(request)
    body: CompleteRequest = await _json(request, CompleteRequest, settings.task_bridge_max_result_bytes)
    return await _finish(request, flows, task_id, body.handler, {"status": "completed", "output": body.output})


@router.post("/{task_id}/fail", status_code=202, summary="Report a task as failed (its code meets retry_on)")
async def fail_task(task_id: str, request: Request, flows: FlowService = Flows) -> Response:
    settings = _settings(request)
    body: FailRequest = await _json(request, FailRequest, settings.task_bridge_max_result_bytes)
    result = {"status": "failed", "error": body.error.model_dump(mode="json")}
    return await _finish(request, flows, task_id, body.handler, result)


async def _finish(
    request: Request, flows: FlowService, task_id: str, handler: str | None, result: dict[str, Any]
) -> Response:
    bridge = flows.bridge
    if task_id in bridge.completed:
        raise Conflict(f"task {task_id!r} was already {bridge.completed[task_id]}")
    leased = bridge.leases.get(task_id)
    if leased is not None and leased.deadline is not None and time.time() > leased.deadline:
        bridge.leases.pop(task_id, None)
        raise Conflict(f"task {task_id!r} is past its deadline: the flow has timed the attempt out")
    if leased is not None:
        envelope = leased.envelope
        task = {k: envelope.get(k) for k in ("task_id", "instance_id", "step", "attempt", "handler")}
    else:
        task = await _pending_task(request, flows, task_id)
    if handler is not None and handler != task["handler"]:
        raise Conflict(f"task {task_id!r} belongs to handler {task['handler']!r}, not {handler!r}")
    _check_scope(request, str(task["handler"]))
    record = orjson.dumps({**task, **result, "completed_at": time.time()})
    key = str(task["instance_id"]).encode()
    await flows.producer.produce(flows.bridge.names.flow_results, record, key)
    bridge.finish(task_id, result["status"])
    return _data({"task_id": task_id, "status": result["status"]}, 202)


async def _pending_task(request: Request, flows: FlowService, task_id: str) -> dict[str, Any]:
    """A task this gateway did not hand out: valid while its instance waits on exactly that attempt."""
    instance_id, key, attempt = _parse(task_id)
    state = flows.view.get(instance_id)
    if state is None:
        raise NotFound(f"task {task_id!r} not found")

    def settled(s: Any) -> bool:
        branch = s.branches.get(key)
        return s.terminal or key in s.outputs or (branch is not None and branch.attempt >= attempt)

    if not settled(state):
        state = await flows.view.wait_for(instance_id, settled, _VIEW_GRACE_S) or state
    branch = state.branches.get(key)
    if branch is not None and branch.task_id == task_id and branch.phase == "waiting":
        flow = FlowCatalog(_config_state(request)).flow(state.flow_id, state.flow_version)
        step = flow.steps.get(branch.step_id) if flow is not None else None
        if not isinstance(step, ExternalTaskStep):
            raise NotFound(f"task {task_id!r} not found")
        return {
            "task_id": task_id,
            "instance_id": instance_id,
            "step": key,
            "attempt": attempt,
            "handler": step.handler,
        }
    if branch is None and key not in state.outputs and not state.terminal:
        raise NotFound(f"task {task_id!r} not found")
    if branch is not None and attempt > branch.attempt:
        raise NotFound(f"task {task_id!r} not found (the step is at attempt {branch.attempt})")
    raise Conflict(f"task {task_id!r} is no longer pending: completed, timed out or superseded by a retry")


def _parse(task_id: str) -> tuple[str, str, int]:
    """`<instance id>:<step key>:<attempt>` (step keys hold no `:`; instance ids may)."""
    instance_id, _, rest = task_id.rpartition(":")
    instance_id, _, key = instance_id.rpartition(":")
    if not instance_id or not key or not rest.isdigit() or int(rest) < 1:
        raise NotFound(f"task {task_id!r} not found (task ids look like <instance>:<step>:<attempt>)")
    return instance_id, key, int(rest)
