"""Orion's admin API (`/api/v1/admin/...`): workflows, channels, connectors, engine, audit, backup.

Thin HTTP layer over `AdminService`: parse the body, call the use case, wrap the answer in Orion's
`{"data": ...}` (lists: `{"data", "total", "limit", "offset"}`). Errors are raised as `app.errors`
exceptions and rendered by `app/gateway/errors.py`. Every write goes through the config topic and
returns once applied, so a request sent after the answer sees the change.

Dependencies come from `request.app.state`: `config_reader`, `config_writer`, `settings`, optionally
`admin_service` (built once on first use), `audit_reader` (async callable returning audit entries) and
`admin_auth` (callable `(request) -> principal | None` raising `Unauthorized`).
"""

from __future__ import annotations

import inspect
import re
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from app.digits import parse_uint
from app.errors import BadRequest, Forbidden, ServiceUnavailable, UnsupportedMediaType
from app.gateway.admin_audit import AuditLog
from app.gateway.admin_service import AdminService, ensure_channel_topic_for
from app.gateway.data import loads_body, read_body
from app.gateway.errors import json_response
from app.identity import Permission, Principal, required_permission
from app.settings import Settings

__all__ = ["get_admin_service", "router"]


async def _authenticate(request: Request) -> None:
    """Admin auth hook: `app.state.admin_auth(request)` names the caller (401 otherwise); its role must grant
    the route's permission and, for writes, its scope must cover the object (403 otherwise)."""
    check = getattr(request.app.state, "admin_auth", None)
    principal = None
    if check is not None:
        principal = check(request)
        if inspect.isawaitable(principal):
            principal = await principal
    if isinstance(principal, str) and principal:
        principal = Principal(principal, "admin")
    request.state.principal = principal if isinstance(principal, Principal) else None
    request.state.admin_principal = request.state.principal.name if request.state.principal else None
    if request.state.principal is not None:
        _authorize(request, request.state.principal)


def _authorize(request: Request, principal: Principal) -> None:
    route = getattr(request.scope.get("route"), "path", request.url.path)
    need = required_permission(request.method, route)
    if not principal.allows(need):
        raise Forbidden(
            f"{principal.name} (role {principal.role}) may not {request.method} {route}: "
            f"it needs the {need.name.lower()} permission"
        )
    if need in (Permission.READ, Permission.WORK) or principal.scope.unrestricted or _CHANGES_NOTHING.search(route):
        return  # task routes check the scope against the task's handler themselves
    parts = route.removeprefix(router.prefix).split("/")
    kind = _KIND_OF.get(parts[1]) if len(parts) > 1 else None
    object_id = request.path_params.get("object_id")
    release = request.path_params.get("release_id")
    if parts[1:2] == ["releases"]:  # a release acts on the object it names: <kind>:<id>:<n>, or the body's
        if release is None:
            return  # POST /releases: the handler checks the scope of the object in the body
        kind, _, rest = str(release).partition(":")
        object_id = rest.rpartition(":")[0] or None
    if kind is None or (object_id is None and not _SCOPE_CHECKED_IN_HANDLER.search(route)):
        raise Forbidden(f"{principal.name} is scoped to some objects and may not {request.method} {route}")
    if object_id is not None:
        _check_scope(request, kind, object_id, None)


# Validation, dry-runs and test suites need the edit permission but change nothing: not scoped.
_CHANGES_NOTHING = re.compile(r"/(validate|test|test-suite|replay)$")
# Create and import name their objects in the body: the handler checks the scope once it has parsed it.
_SCOPE_CHECKED_IN_HANDLER = re.compile(r"^/api/v1/admin/[a-z]+(/import)?$")
_KIND_OF = {
    "workflows": "workflow",
    "channels": "channel",
    "connectors": "connector",
    "flows": "flow",
    "schedules": "schedule",
    "rulesets": "ruleset",
    "testsuites": "testsuite",
}


def _check_scope(request: Request, kind: str, object_id: str, doc: Any) -> None:
    """A scoped principal may write only objects whose id or tags its scope covers (stored tags and new ones)."""
    principal: Principal | None = getattr(request.state, "principal", None)
    if principal is None or principal.scope.unrestricted:
        return
    tags: list[str] = []
    if isinstance(doc, dict) and isinstance(doc.get("tags"), list):
        tags += [t for t in doc["tags"] if isinstance(t, str)]
    reader = getattr(request.app.state, "config_reader", None)
    current = reader.state.get(kind, object_id) if reader is not None else None
    if current is not None and current.latest is not None:
        stored = current.versions[current.latest].get("tags")
        if isinstance(stored, list):
            tags += [t for t in stored if isinstance(t, str)]
    if not principal.may_write(object_id, tags):
        raise Forbidden(f"{principal.name} is not allowed to change {kind} {object_id!r} (outside its scope)")


router = APIRouter(prefix="/api/v1/admin", tags=["Admin"], dependencies=[Depends(_authenticate)])


def get_admin_service(request: Request) -> AdminService:
    """The app's AdminService, built on first use from `app.state` (reader, writer, settings)."""
    state = request.app.state
    svc = getattr(state, "admin_service", None)
    if svc is not None:
        return svc  # type: ignore[no-any-return]
    reader = getattr(state, "config_reader", None)
    writer = getattr(state, "config_writer", None)
    if reader is None or writer is None:
        raise ServiceUnavailable("admin API unavailable: the config store is not running on this instance")
    settings: Settings = getattr(state, "settings", None) or Settings()

    async def ensure_topic(channel: Any) -> None:
        await ensure_channel_topic_for(settings, channel)

    audit = getattr(state, "audit_reader", None)
    if audit is None:
        audit = AuditLog(settings)  # reads the audit topic per request: nothing to start or stop
    svc = AdminService(reader, writer, settings, audit_source=audit, ensure_topic=ensure_topic)
    state.admin_service = svc
    return svc


Svc = Depends(get_admin_service)


def _if_match(request: Request) -> int | None:
    """Optimistic concurrency for HTTP callers: `If-Match: <revision>` (as returned in `revision`)."""
    raw = request.headers.get("if-match")
    if raw is None:
        return None
    raw = raw.strip().strip('"').removeprefix("W/").strip('"')
    revision = parse_uint(raw)
    if revision is None:
        raise BadRequest(f"If-Match must be an object revision (an integer), got {raw[:64]!r}")
    return revision


def _actor(request: Request) -> str:
    principal = getattr(request.state, "admin_principal", None)
    if principal:
        return str(principal)
    client = request.client.host if request.client else "unknown"
    return f"anonymous@{client}"


async def _body(request: Request, *, required: bool = True) -> Any:
    """The JSON body: 415 for a non-JSON content type, 400 for malformed JSON or a missing body,
    413 above `max_admin_body_size` (read bounded), 408 when it trickles in too slowly."""
    settings: Settings = getattr(request.app.state, "settings", None) or Settings()
    raw = await read_body(request, settings.max_admin_body_size, settings.body_read_timeout_ms / 1000)
    if not raw.strip():
        if required:
            raise BadRequest("request body is required (JSON)")
        return None
    ctype = request.headers.get("content-type", "")
    if ctype and "json" not in ctype.lower():
        raise UnsupportedMediaType(f"expected Content-Type application/json, got {ctype!r}")
    return loads_body(raw)


def _id_in(kind: str, doc: Any) -> str:
    """The id a create/import document names (`<kind>_id`, `id`, or a connector's `name`); '' if none."""
    if isinstance(doc, dict):
        for key in (f"{kind}_id", "id", "name"):
            if isinstance(doc.get(key), str):
                return str(doc[key])
    return ""


def _data(item: Any, status: int = 200) -> Response:
    return json_response({"data": item}, status)


_JSON_BODY = {"requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}}
_JSON_LIST_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"type": "array", "items": {}}}},
    }
}
_OPTIONAL_BODY = {"requestBody": {"required": False, "content": {"application/json": {"schema": {"type": "object"}}}}}

Limit = Query(None, ge=1, le=1000, description="Page size (default 50)")
# Upper bounds keep echoed integers in JSON's safe range (orjson refuses ints above 64 bits: was a 500).
_MAX_INT = 2**31 - 1
Offset = Query(None, ge=0, le=_MAX_INT, description="Page offset (default 0)")


# ---------------------------------------------------------------------------------------------------
# Lifecycle routes shared by workflows and channels (and CRUD for connectors)
# ---------------------------------------------------------------------------------------------------
def _crud(kind: str, plural: str, tag: str, *, lifecycle: bool) -> None:
    base = f"/{plural}"

    @router.post(
        base,
        status_code=201,
        tags=[tag],
        summary=f"Create {kind}",
        openapi_extra=_JSON_BODY,
        name=f"create_{kind}",
    )
    async def create(request: Request, svc: AdminService = Svc) -> Response:
        body = await _body(request)
        _check_scope(request, kind, _id_in(kind, body), body)
        return _data(await svc.create(kind, body, actor=_actor(request)), 201)

    @router.get(base, tags=[tag], summary=f"List {plural}", name=f"list_{plural}")
    async def list_(
        status: str | None = Query(None, description="draft, active or archived"),
        tag: str | None = Query(None, description="only objects carrying this tag"),
        channel_type: str | None = Query(None),
        protocol: str | None = Query(None),
        connector_type: str | None = Query(None),
        limit: int | None = Limit,
        offset: int | None = Offset,
        svc: AdminService = Svc,
    ) -> Response:
        filters = {"channel_type": channel_type, "protocol": protocol, "connector_type": connector_type}
        page = svc.list_page(kind, status=status, tag=tag, filters=filters, limit=limit, offset=offset)
        return json_response(page)

    @router.get(f"{base}/export", tags=[tag], summary=f"Export {plural}", name=f"export_{plural}")
    async def export(
        status: str | None = Query(None), tag: str | None = Query(None), svc: AdminService = Svc
    ) -> Response:
        return json_response(svc.export(kind, status=status, tag=tag))

    @router.post(
        f"{base}/import",
        tags=[tag],
        summary=f"Import {plural} (created as drafts)",
        openapi_extra=_JSON_LIST_BODY,
        name=f"import_{plural}",
    )
    async def import_(
        request: Request,
        dry_run: bool = Query(False, description="validate every item and report; write nothing"),
        svc: AdminService = Svc,
    ) -> Response:
        body = await _body(request)
        for doc in body if isinstance(body, list) else []:
            _check_scope(request, kind, _id_in(kind, doc), doc)
        return json_response(await svc.import_(kind, body, actor=_actor(request), dry_run=dry_run))

    @router.get(f"{base}/{{object_id}}", tags=[tag], summary=f"Get {kind}", name=f"get_{kind}")
    async def get(
        object_id: str, version: int | None = Query(None, ge=1, le=_MAX_INT), svc: AdminService = Svc
    ) -> Response:
        return _data(svc.get(kind, object_id, version))

    @router.put(
        f"{base}/{{object_id}}",
        tags=[tag],
        summary=f"Update {kind}",
        openapi_extra=_JSON_BODY,
        name=f"update_{kind}",
    )
    async def update(object_id: str, request: Request, svc: AdminService = Svc) -> Response:
        return _data(
            await svc.update(kind, object_id, await _body(request), actor=_actor(request), expected=_if_match(request))
        )

    @router.delete(
        f"{base}/{{object_id}}",
        status_code=204,
        tags=[tag],
        summary=f"Delete {kind} (all versions)",
        name=f"delete_{kind}",
    )
    async def delete(object_id: str, request: Request, svc: AdminService = Svc) -> Response:
        await svc.delete(kind, object_id, actor=_actor(request), expected=_if_match(request))
        return Response(status_code=204)

    if not lifecycle:
        return

    @router.patch(
        f"{base}/{{object_id}}/status",
        tags=[tag],
        summary="Activate or archive",
        openapi_extra=_JSON_BODY,
        name=f"status_{kind}",
    )
    async def status(object_id: str, request: Request, svc: AdminService = Svc) -> Response:
        return _data(
            await svc.set_status(
                kind, object_id, await _body(request), actor=_actor(request), expected=_if_match(request)
            )
        )

    @router.get(f"{base}/{{object_id}}/versions", tags=[tag], summary="Version history", name=f"versions_{kind}")
    async def versions(
        object_id: str, limit: int | None = Limit, offset: int | None = Offset, svc: AdminService = Svc
    ) -> Response:
        return json_response(svc.versions(kind, object_id, limit=limit, offset=offset))

    @router.post(
        f"{base}/{{object_id}}/versions",
        status_code=201,
        tags=[tag],
        summary="New draft version from the latest",
        name=f"new_version_{kind}",
    )
    async def new_version(object_id: str, request: Request, svc: AdminService = Svc) -> Response:
        return _data(await svc.new_version(kind, object_id, actor=_actor(request), expected=_if_match(request)), 201)

    @router.post(
        f"{base}/{{object_id}}/rollback",
        tags=[tag],
        openapi_extra=_JSON_BODY,
        summary="Activate a copy of an older version as a new version",
        name=f"rollback_{kind}",
    )
    async def rollback(object_id: str, request: Request, svc: AdminService = Svc) -> Response:
        return _data(await svc.rollback(kind, object_id, await _body(request), actor=_actor(request)))


# Static routes first: `/channels/validate` must not be taken for a channel id.
@router.post(
    "/channels/validate",
    tags=["Channels"],
    summary="Validate a channel definition (the field errors a write would get)",
    openapi_extra=_JSON_BODY,
)
async def validate_channel(request: Request, svc: AdminService = Svc) -> Response:
    return json_response(svc.validate_channel(await _body(request)))


# Static workflow routes first: `/workflows/validate` must not be taken for a workflow id.
@router.post(
    "/workflows/validate",
    tags=["Workflows"],
    summary="Validate a workflow definition",
    openapi_extra=_JSON_BODY,
)
async def validate_workflow(request: Request, svc: AdminService = Svc) -> Response:
    return json_response(svc.validate(await _body(request)))


_crud("workflow", "workflows", "Workflows", lifecycle=True)
_crud("flow", "flows", "Flows", lifecycle=True)
_crud("schedule", "schedules", "Schedules", lifecycle=True)


@router.patch(
    "/workflows/{object_id}/rollout",
    tags=["Workflows"],
    summary="Update rollout percentage",
    openapi_extra=_JSON_BODY,
)
async def workflow_rollout(object_id: str, request: Request, svc: AdminService = Svc) -> Response:
    return _data(
        await svc.rollout(
            "workflow", object_id, await _body(request), actor=_actor(request), expected=_if_match(request)
        )
    )


@router.post(
    "/workflows/{object_id}/test",
    tags=["Workflows"],
    summary="Dry-run on sample data",
    openapi_extra=_OPTIONAL_BODY,
)
async def workflow_test(
    object_id: str, request: Request, version: int | None = Query(None, ge=1, le=_MAX_INT), svc: AdminService = Svc
) -> Response:
    return json_response(svc.test(object_id, await _body(request, required=False), version))


@router.post(
    "/workflows/{object_id}/test-suite",
    tags=["Workflows"],
    summary="Run the version's test suite (tests) offline, side effects stubbed",
    openapi_extra=_OPTIONAL_BODY,
)
async def workflow_test_suite(
    object_id: str, request: Request, version: int | None = Query(None, ge=1, le=_MAX_INT), svc: AdminService = Svc
) -> Response:
    return json_response(svc.test_suite("workflow", object_id, await _body(request, required=False), version))


# Rulesets: the same lifecycle as workflows (one active version at a time: callers pin versions).
@router.post(
    "/rulesets/validate",
    tags=["Rulesets"],
    summary="Validate a ruleset definition (graph checks; call checks as warnings)",
    openapi_extra=_JSON_BODY,
)
async def validate_ruleset(request: Request, svc: AdminService = Svc) -> Response:
    return json_response(svc.validate_ruleset(await _body(request)))


_crud("ruleset", "rulesets", "Rulesets", lifecycle=True)


@router.post(
    "/rulesets/{object_id}/test",
    tags=["Rulesets"],
    summary="Dry-run on sample data, with the decision path",
    openapi_extra=_OPTIONAL_BODY,
)
async def ruleset_test(
    object_id: str, request: Request, version: int | None = Query(None, ge=1, le=_MAX_INT), svc: AdminService = Svc
) -> Response:
    return json_response(svc.test_ruleset(object_id, await _body(request, required=False), version))


@router.post(
    "/rulesets/{object_id}/test-suite",
    tags=["Rulesets"],
    summary="Run the version's test suite (tests)",
    openapi_extra=_OPTIONAL_BODY,
)
async def ruleset_test_suite(
    object_id: str, request: Request, version: int | None = Query(None, ge=1, le=_MAX_INT), svc: AdminService = Svc
) -> Response:
    return json_response(svc.test_suite("ruleset", object_id, await _body(request, required=False), version))


_crud("testsuite", "testsuites", "Test suites", lifecycle=False)
_crud("channel", "channels", "Channels", lifecycle=True)


@router.post("/connectors/reload", tags=["Connectors"], summary="Reload connectors (automatic in Quasar)")
async def connectors_reload(svc: AdminService = Svc) -> Response:
    # Connectors are folded from the config topic on every instance; there is nothing to reload.
    return json_response({"reloaded": True, "connectors_count": len(svc.state.objects("connector"))})


# Circuit breakers live in the processes that run connector calls (workers; `app.state.connector_services`
# when this process runs some too). Workers publish their breakers' states on the config topic and obey
# reset commands written there (app/connectors/breaker_cluster.py), so any gateway lists and resets them.
# Registered before the connector CRUD so the path is not an id.
def _breaker_states(request: Request) -> list[dict[str, Any]]:
    from app.connectors.breaker_cluster import cluster_breaker_states

    states: list[dict[str, Any]] = []
    reader = getattr(request.app.state, "config_reader", None)
    if reader is not None and hasattr(reader, "runtime"):
        states.extend(cluster_breaker_states(reader))
    services = getattr(request.app.state, "connector_services", None)
    if services is not None:
        instance = getattr(request.app.state, "instance_id", None)
        states.extend({**b, "instance": instance} for b in services.list_circuit_breakers())
    return states


@router.get("/connectors/circuit-breakers", tags=["Connectors"], summary="List circuit breaker states")
async def circuit_breakers_list(request: Request) -> Response:
    return _data(_breaker_states(request))


@router.post("/connectors/circuit-breakers/{key}", tags=["Connectors"], summary="Reset a circuit breaker")
async def circuit_breaker_reset(key: str, request: Request) -> Response:
    from app.connectors.breaker_cluster import request_breaker_reset
    from app.errors import NotFound

    instances = sorted({str(s.get("instance")) for s in _breaker_states(request) if s.get("key") == key})
    if not instances:
        raise NotFound(f"Circuit breaker '{key}' not found")
    services = getattr(request.app.state, "connector_services", None)
    if services is not None:
        services.reset_circuit_breaker(key)
    reader = getattr(request.app.state, "config_reader", None)
    if reader is not None and hasattr(reader, "write_runtime"):
        await request_breaker_reset(reader, key)  # every worker holding it closes it
    return _data({"key": key, "state": "closed", "instances": instances})


_crud("connector", "connectors", "Connectors", lifecycle=False)


@router.get("/functions", tags=["Engine"], summary="Task functions (built-in and plugins) with their input schemas")
async def functions_list() -> Response:
    from app.connectors import connector_registry
    from app.engine.functions import BUILTIN_FUNCTIONS, CONNECTOR_FUNCTIONS
    from app.engine.functions.schemas import input_schema_of

    builtin = {spec.name for spec in (*BUILTIN_FUNCTIONS, *CONNECTOR_FUNCTIONS)}
    registry = connector_registry()  # what workers run: built-ins, connector functions, entry-point plugins
    items = []
    for name in registry.names():
        spec = registry.get(name)
        assert spec is not None
        items.append(
            {
                "name": name,
                "description": spec.description,
                "source": "builtin" if name in builtin else "plugin",
                "side_effects": spec.side_effects,
                "input_schema": input_schema_of(name, spec.input_schema),
            }
        )
    return json_response({"data": items, "total": len(items)})


# ---------------------------------------------------------------------------------------------------
# Engine, audit, backup
# ---------------------------------------------------------------------------------------------------
@router.get("/engine/status", tags=["Engine"], summary="Engine status")
async def engine_status(svc: AdminService = Svc) -> Response:
    return json_response(svc.engine_status())


@router.post("/engine/reload", tags=["Engine"], summary="Hot reload (automatic: returns the current state)")
async def engine_reload(svc: AdminService = Svc) -> Response:
    return json_response(svc.reload())


@router.get("/audit-logs", tags=["Audit"], summary="Audit log entries, newest first")
async def audit_logs(
    action: str | None = Query(None),
    resource_type: str | None = Query(None),
    resource_id: str | None = Query(None),
    principal: str | None = Query(None),
    limit: int | None = Limit,
    offset: int | None = Offset,
    svc: AdminService = Svc,
) -> Response:
    filters = {
        "action": action,
        "resource_type": resource_type,
        "resource_id": resource_id,
        "principal": principal,
    }
    return json_response(await svc.audit_logs(filters, limit=limit, offset=offset))


@router.get("/backup", tags=["Backup"], summary="Backup of the whole config")
@router.post("/backup", tags=["Backup"], summary="Backup of the whole config (Orion's verb)")
async def backup(svc: AdminService = Svc) -> Response:
    return json_response(await svc.backup())


@router.post("/restore", tags=["Backup"], summary="Restore the whole config from a backup", openapi_extra=_JSON_BODY)
async def restore(
    request: Request,
    prune: bool = Query(True, description="delete objects not in the backup"),
    svc: AdminService = Svc,
) -> Response:
    return json_response(await svc.restore(await _body(request), actor=_actor(request), prune=prune))


# ---------------------------------------------------------------------------------------------------
# Admin API keys with roles (stored hashed on the config topic; the key itself is shown once)
# ---------------------------------------------------------------------------------------------------
def _writer(request: Request) -> Any:
    writer = getattr(request.app.state, "config_writer", None)
    if writer is None:
        raise ServiceUnavailable("admin API unavailable: the config store is not running on this instance")
    return writer


def _key_view(obj: Any) -> dict[str, Any]:
    n = obj.active[0] if obj.active else obj.latest
    doc = obj.versions[n]
    return {
        "name": obj.id,
        "role": doc.get("role"),
        "scope": doc.get("scope") or {"ids": [], "tags": []},
        "description": doc.get("description", ""),
        "created_by": doc.get("created_by", ""),
        "created_at": doc.get("created_at"),
        "updated_at": doc.get("updated_at"),
        "status": "active" if obj.active else "revoked",
        "principal": f"key:{obj.id}",
    }


@router.post("/keys", status_code=201, tags=["Keys"], summary="Create an admin API key", openapi_extra=_JSON_BODY)
async def key_create(request: Request) -> Response:
    from app.config_store.operations import Create
    from app.config_store.state import valid_object_id
    from app.identity import ApiKeyDoc, hash_key, new_key

    body = await _body(request)
    if not isinstance(body, dict):
        raise BadRequest("key definition must be a JSON object")
    name = body.get("name")
    if not valid_object_id(name):
        raise BadRequest("name must match ^[A-Za-z0-9][A-Za-z0-9._-]*$ (at most 128 characters)")
    unknown = sorted(set(body) - {"name", "role", "scope", "description"})
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(unknown)} (allowed: name, role, scope, description)")
    key = new_key()
    fields = {k: v for k, v in body.items() if k != "name"}
    try:
        doc = ApiKeyDoc.model_validate({**fields, "key_hash": hash_key(key), "created_by": _actor(request)})
    except ValueError as exc:
        from app.errors import ValidationFailed

        raise ValidationFailed(f"invalid key definition: {exc}") from None
    result = await _writer(request).apply("apikey", name, Create(doc.model_dump(mode="json")), actor=_actor(request))
    return _data({**_key_view(result.object), "key": key}, 201)


@router.get("/keys", tags=["Keys"], summary="List admin API keys (never the keys or their hashes)")
async def key_list(svc: AdminService = Svc) -> Response:
    items = [_key_view(o) for o in svc.state.objects("apikey")]
    return json_response({"data": items, "total": len(items)})


@router.delete("/keys/{name}", status_code=204, tags=["Keys"], summary="Revoke an admin API key")
async def key_revoke(name: str, request: Request, svc: AdminService = Svc) -> Response:
    from app.config_store.operations import Delete
    from app.errors import NotFound

    if svc.state.get("apikey", name) is None:
        raise NotFound(f"API key '{name}' not found")
    await _writer(request).apply("apikey", name, Delete(), actor=_actor(request))
    return Response(status_code=204)
