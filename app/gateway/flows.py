"""Flow instances over HTTP: start, read, list, signal, and a Server-Sent Events stream of each step.

Writes are events on `flows.events` (the runner that owns the instance applies them); reads come from
the `InstanceView`, which is pushed every state change from the changelog (no storage polling).
Authentication and roles are the admin API's: reading needs `reader`, starting and signalling `editor`.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from app.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from app.flow_runtime.bridge import TaskBridge
from app.flow_runtime.catalog import FlowCatalog
from app.flow_runtime.client import FlowClient, instance_id_for
from app.flow_runtime.view import InstanceView
from app.flows.instance import SIGNAL_TYPES, TERMINAL, InstanceState, SignalEvent, StartEvent
from app.gateway.admin import _authenticate
from app.gateway.data import read_body
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import producer_config
from app.kafka.names import TopicNames
from app.kafka.producer import AsyncProducer
from app.settings import Settings

__all__ = ["FlowService", "admin_router", "close_flow_service", "router"]

router = APIRouter(prefix="/api/v1", tags=["Flow instances"], dependencies=[Depends(_authenticate)])
MAX_WAIT_MS = 60_000
_UNKNOWN = (
    "instance {!r} not found (or finished and no longer kept by this gateway's view: "
    "QUASAR_FLOW_VIEW_MAX_FINISHED and docs/flows.md)"
)
_SSE_KEEPALIVE_S = 15.0


@dataclass
class FlowService:
    view: InstanceView
    client: FlowClient
    producer: AsyncProducer
    bridge: TaskBridge

    async def close(self) -> None:
        await self.bridge.close()
        await self.view.stop()
        await self.producer.close()


def _config_state(request: Request) -> Any:
    """The folded config (503 on an instance without a config store, like the rest of the admin API)."""
    reader = getattr(request.app.state, "config_reader", None)
    if reader is None:
        raise ServiceUnavailable("flow API unavailable: the config store is not running on this instance")
    return reader.state


async def _service(request: Request) -> FlowService:
    """Started on first use (reading the state changelog costs a gateway that serves no flows nothing)."""
    state = request.app.state
    service: FlowService | None = getattr(state, "flow_service", None)
    if service is not None:
        return service
    lock = getattr(state, "flow_service_lock", None)
    if lock is None:
        lock = state.flow_service_lock = asyncio.Lock()
    async with lock:
        service = getattr(state, "flow_service", None)
        if service is None:
            settings: Settings = state.settings
            names = TopicNames(settings.topic_prefix)
            partitions = topic_partitions(create_admin(settings)).get(names.flow_events, 0)
            if not partitions:
                raise ServiceUnavailable(f"{names.flow_events} does not exist: run `quasar topics apply`")
            producer = AsyncProducer(
                producer_config(settings, client_id=f"quasar-gateway-flows-{settings.instance_id}")
            )
            view = InstanceView(settings)
            await view.start()
            service = FlowService(view, FlowClient(producer, names, partitions), producer, TaskBridge(settings))
            state.flow_service = service
    return service


async def close_flow_service(state: Any) -> None:
    service: FlowService | None = getattr(state, "flow_service", None)
    if service is not None:
        state.flow_service = None
        await service.close()


Flows = Depends(_service)


class StartRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Any = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = Field(default=None, min_length=1, max_length=200)
    version: int | None = Field(default=None, ge=1, description="Default: the active version")
    wait_ms: int = Field(default=0, ge=0, le=MAX_WAIT_MS, description="Wait up to this long for a final status")


class SignalRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    signal: str = Field(description=", ".join(SIGNAL_TYPES))
    name: str | None = Field(default=None, max_length=128)
    payload: Any = None
    signal_id: str | None = Field(default=None, min_length=1, max_length=128, description="Default: generated")


async def _json(request: Request, model: type[BaseModel], limit: int | None = None) -> Any:
    """The body as `model`: 400 when malformed, 413 above `limit` (default: `max_admin_body_size`), read bounded."""
    settings: Settings = request.app.state.settings
    raw = await read_body(request, limit or settings.max_admin_body_size, settings.body_read_timeout_ms / 1000)
    try:
        return model.model_validate(orjson.loads(raw) if raw.strip() else {})
    except orjson.JSONDecodeError as exc:
        raise BadRequest(f"request body is not valid JSON: {exc}") from None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "(body)"
        raise BadRequest(f"{where}: {first['msg']}", details={"errors": exc.errors(include_url=False)}) from None


def _view(state: InstanceState) -> dict[str, Any]:
    body = state.model_dump(mode="json", exclude={"signals_seen"})
    body["terminal"] = state.status in TERMINAL
    return body


def _data(item: Any, status: int = 200) -> Response:
    return Response(orjson.dumps({"data": item}), status_code=status, media_type="application/json")


@router.post("/flows/{flow_id}/instances", status_code=202, summary="Start an instance of a flow")
async def start_instance(flow_id: str, request: Request, flows: FlowService = Flows) -> Response:
    body: StartRequest = await _json(request, StartRequest)
    catalog = FlowCatalog(_config_state(request))
    version = body.version or catalog.active_version(flow_id)
    if version is None:
        raise NotFound(f"flow {flow_id!r} has no active version")
    if catalog.flow(flow_id, version) is None:
        raise NotFound(f"flow {flow_id!r} version {version} does not exist or is not valid")
    instance_id = (
        instance_id_for(flow_id, body.idempotency_key) if body.idempotency_key else f"{flow_id}:{uuid.uuid4()}"
    )
    existing = flows.view.get(instance_id)
    if existing is not None:  # idempotent start: the instance this key already names
        return _data(_view(existing), 200)
    event = StartEvent(
        instance_id=instance_id,
        flow_id=flow_id,
        flow_version=version,
        data=body.data,
        metadata=body.metadata,
        idempotency_key=body.idempotency_key,
    )
    await flows.client.send(event)
    if body.wait_ms:
        state = await flows.view.wait_for(instance_id, lambda s: s.status in TERMINAL, body.wait_ms / 1000)
        if state is not None:
            return _data(_view(state), 200 if state.status in TERMINAL else 202)
    return _data({"id": instance_id, "flow_id": flow_id, "flow_version": version, "status": "scheduled"}, 202)


@router.get("/instances/{instance_id}", summary="An instance: status, context, step outputs, timeline")
async def get_instance(instance_id: str, flows: FlowService = Flows) -> Response:
    state = flows.view.get(instance_id)
    if state is None:
        raise NotFound(_UNKNOWN.format(instance_id))
    return _data(_view(state))


@router.get("/instances", summary="List instances (newest first)")
async def list_instances(
    flow_id: str | None = Query(None),
    status: str | None = Query(None, description="scheduled, running, waiting, paused, completed, failed, cancelled"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    flows: FlowService = Flows,
) -> Response:
    found = sorted(flows.view.find(flow_id=flow_id, status=status), key=lambda s: s.created_at, reverse=True)
    page = [
        {
            k: s.model_dump(mode="json")[k]
            for k in ("id", "flow_id", "flow_version", "status", "cursor", "created_at", "updated_at")
        }
        for s in found[offset : offset + limit]
    ]
    body = {"data": page, "total": len(found), "limit": limit, "offset": offset}
    return Response(orjson.dumps(body), media_type="application/json")


@router.post("/instances/{instance_id}/signals", status_code=202, summary="Signal an instance")
async def signal_instance(instance_id: str, request: Request, flows: FlowService = Flows) -> Response:
    body: SignalRequest = await _json(request, SignalRequest)
    if body.signal not in SIGNAL_TYPES:
        raise BadRequest(f"signal must be one of {', '.join(SIGNAL_TYPES)}")
    if body.signal == "custom" and not body.name:
        raise BadRequest("a custom signal needs a name")
    if body.signal == "update_context" and not isinstance(body.payload, dict):
        raise BadRequest("update_context needs an object payload (a JSON merge patch)")
    state = flows.view.get(instance_id)
    if state is None:
        raise NotFound(f"instance {instance_id!r} not found")
    if state.status in TERMINAL:
        raise Conflict(f"instance {instance_id!r} is {state.status}: it takes no more signals")
    signal_id = body.signal_id or str(uuid.uuid4())
    event = SignalEvent(
        instance_id=instance_id,
        signal_id=signal_id,
        signal=body.signal,  # type: ignore[arg-type]  # checked above
        name=body.name,
        payload=body.payload,
    )
    await flows.client.send(event)
    return _data({"instance_id": instance_id, "signal_id": signal_id, "signal": body.signal}, 202)


@router.get("/instances/{instance_id}/stream", summary="Server-Sent Events: one event per state change")
async def stream_instance(instance_id: str, request: Request, flows: FlowService = Flows) -> StreamingResponse:
    if flows.view.get(instance_id) is None:
        raise NotFound(f"instance {instance_id!r} not found")

    async def events() -> AsyncIterator[bytes]:
        sent = 0  # timeline entries already sent (the timeline keeps the newest 500)
        seen_events = -1
        updates = flows.view.watch(instance_id)
        try:
            while not await request.is_disconnected():
                try:
                    state = await asyncio.wait_for(anext(updates), _SSE_KEEPALIVE_S)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                if state.events <= seen_events:
                    continue
                seen_events = state.events
                fresh = state.timeline[sent:] if sent <= len(state.timeline) else state.timeline[-1:]
                sent = len(state.timeline)
                for entry in fresh:
                    yield b"event: step\ndata: " + orjson.dumps(entry) + b"\n\n"
                status = {"status": state.status, "cursor": state.cursor, "events": state.events}
                yield b"event: status\ndata: " + orjson.dumps(status) + b"\n\n"
                if state.status in TERMINAL:
                    yield b"event: end\ndata: " + orjson.dumps(_view(state)) + b"\n\n"
                    return
        finally:
            with contextlib.suppress(Exception):
                await updates.aclose()  # type: ignore[attr-defined]

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


# -- dry-run of a flow version (admin API): the in-memory runtime on a virtual clock ------------------
admin_router = APIRouter(prefix="/api/v1/admin", tags=["Flows"], dependencies=[Depends(_authenticate)])


class DryRunRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    data: Any = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    signals: list[dict[str, Any]] = Field(default_factory=list, max_length=100, description="sent in order after start")
    external: dict[str, Any] = Field(default_factory=dict, description="handler -> output every task of it returns")
    advance: str | float = Field(default=0, description="virtual time to let pass, e.g. 3d")


@admin_router.post(
    "/flows/{object_id}/test", summary="Dry-run a flow version on a virtual clock (side effects recorded)"
)
async def flow_test(object_id: str, request: Request, version: int | None = Query(None, ge=1)) -> Response:
    from app.config_store.state import definition_of
    from app.flows.clock import VirtualClock
    from app.flows.compiler import FlowInvalid, compile_flow
    from app.flows.local import LocalRuntime
    from app.flows.timing import TimingError, parse_duration

    body: DryRunRequest = await _json(request, DryRunRequest)
    state = _config_state(request)
    obj = state.get("flow", object_id)
    n = version if version is not None else (obj.draft or obj.latest) if obj is not None else None
    if obj is None or n is None or n not in obj.versions:
        raise NotFound(f"Flow '{object_id}' has no version {n}")
    try:
        seconds = parse_duration(body.advance)
    except TimingError as exc:
        raise BadRequest(f"advance: {exc}") from None

    def compiled(flow_id: str, number: int) -> Any:
        found = state.get("flow", flow_id)
        if found is None or number not in found.versions:
            return None
        doc = {"flow_id": flow_id, **definition_of("flow", found.versions[number]), "version": number}
        return compile_flow(doc, recording=True)  # side-effecting functions are recorded, not called

    try:
        flows = [compiled(object_id, n)]
        flows += [
            compiled(s.flow_id, s.version) for s in flows[0].steps.values() if getattr(s, "type", "") == "call_flow"
        ]
    except FlowInvalid as exc:
        raise BadRequest(exc.message, details={"errors": exc.errors}) from None
    runtime = LocalRuntime([f for f in flows if f is not None], VirtualClock())

    async def answer_external() -> None:
        for task in list(runtime.external):
            if task.handler in body.external:
                runtime.external.remove(task)
                await runtime.complete_external(task, True, body.external[task.handler])

    instance_id = f"dry-run:{object_id}"
    try:
        await runtime.start(object_id, instance_id, body.data, version=n, metadata=body.metadata)
        await answer_external()
        for i, signal in enumerate(body.signals):
            await runtime.signal(
                instance_id,
                str(signal.get("signal", "custom")),
                f"dry-run-{i}",
                name=signal.get("name"),
                payload=signal.get("payload"),
            )
            await answer_external()
        await runtime.advance(seconds)
        await answer_external()
    except ValidationError as exc:
        raise BadRequest(f"signals: {exc.errors()[0]['msg']}") from None
    result = runtime.states[instance_id]
    report = _view(result)
    report["pending_external_tasks"] = [
        {"task_id": t.task_id, "handler": t.handler, "step": t.key, "input": t.input} for t in runtime.external
    ]
    report["refused_signals"] = [r.reason for r in runtime.rejected]
    return _data(report)
