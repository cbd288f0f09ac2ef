"""Releases and release policies over HTTP (`/api/v1/admin/releases`, `/api/v1/admin/policies`).

Thin: each route builds a pure operation (config_store/release_ops.py) and hands it to the config writer;
the config fold decides (config_store/releases.py), identically on every instance. The caller's principal
and role come from admin authentication (with auth off, everyone is `anonymous@<ip>` with role admin).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response

from app.config_store.operations import Delete, Put
from app.config_store.release_ops import ExecuteRelease, RequestRelease, ReviewRelease
from app.config_store.releases import RELEASE_KINDS, RELEASE_STATES, ReleasePolicyDoc, effective_policy
from app.config_store.state import ConfigState, ObjectState, valid_object_id
from app.digits import is_uint
from app.engine.diff import diff_definitions
from app.errors import BadRequest, NotFound, ServiceUnavailable, ValidationFailed
from app.gateway.admin import _actor, _authenticate, _body, _check_scope, _data, get_admin_service
from app.gateway.errors import json_response

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin", dependencies=[Depends(_authenticate)])


def _writer(request: Request) -> Any:
    writer = getattr(request.app.state, "config_writer", None)
    if writer is None:
        raise ServiceUnavailable("admin API unavailable: the config store is not running on this instance")
    return writer


def _state(request: Request) -> ConfigState:
    state: ConfigState = _writer(request).reader.state
    return state


def _who(request: Request) -> tuple[str, str]:
    principal = getattr(request.state, "principal", None)
    if principal is not None:
        return principal.name, principal.role
    return _actor(request), "admin"  # admin auth off: Orion's open admin API


def _policy_of(state: ConfigState, obj: ObjectState) -> Any:
    tags = {t for d in obj.versions.values() for t in (d.get("tags") or []) if isinstance(t, str)}
    return effective_policy(state.policies(), obj.kind, obj.id, tags)


def _parse_rid(rid: str) -> tuple[str, str]:
    parts = rid.split(":")
    if len(parts) != 3 or parts[0] not in RELEASE_KINDS or not is_uint(parts[2]):
        raise BadRequest(f"release id {rid!r} is not <kind>:<id>:<n>")
    return parts[0], parts[1]


def _view(obj: ObjectState, rid: str, rel: Any, state: ConfigState) -> dict[str, Any]:
    policy = _policy_of(state, obj)
    approvals = [e["by"] for e in rel.get("events", ()) if e.get("type") == "approved"]
    return {
        "id": rid,
        "kind": obj.kind,
        "object_id": obj.id,
        **{k: v for k, v in rel.items() if k != "events"},
        "approvals": approvals,
        "approvals_needed": policy.needed(str(rel.get("action"))) if policy is not None else 0,
        "policies": list(policy.names) if policy is not None else [],
        "diff": _evidence(obj, rel) if rel.get("state") in ("requested", "approved") else None,
        "events": rel.get("events", []),
    }


def _object(state: ConfigState, kind: str, object_id: str) -> ObjectState:
    obj = state.get(kind, object_id)
    if obj is None:
        raise NotFound(f"{kind} '{object_id}' not found")
    return obj


async def _apply(request: Request, kind: str, object_id: str, op: Any) -> dict[str, Any]:
    result = await _writer(request).apply(kind, object_id, op, actor=_who(request)[0])
    return {"object": result.object, "revision": result.revision}


@router.post("/releases", status_code=201, tags=["Releases"], summary="Request a release")
async def release_request(request: Request) -> Response:
    body = await _body(request)
    if not isinstance(body, dict):
        raise BadRequest("release request must be a JSON object")
    kind, object_id = str(body.get("kind")), str(body.get("id"))
    if kind not in RELEASE_KINDS or not valid_object_id(object_id):
        raise BadRequest(f"a release names 'kind' (one of {', '.join(RELEASE_KINDS)}) and the object's 'id'")
    unknown = set(body) - {"kind", "id", "action", "version", "rollout_percentage", "comment"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    _check_scope(request, kind, object_id, None)
    state = _state(request)
    obj = _object(state, kind, object_id)
    by, role = _who(request)
    op = RequestRelease(
        action=body.get("action", "activate"),
        by=by,
        role=role,
        policy=_policy_of(state, obj),
        version=body.get("version"),
        rollout_percentage=body.get("rollout_percentage", 100),
        comment=body.get("comment"),
    )
    out = await _apply(request, kind, object_id, op)
    after: ObjectState = out["object"]
    rid = max(after.releases, key=lambda r: int(r.rsplit(":", 1)[1]))
    return _data(_view(after, rid, after.releases[rid], state), 201)


def _evidence(obj: ObjectState, rel: Any) -> dict[str, Any] | None:
    """The diff a reviewer approves: the live version -> the release's target (computed, never stored)."""
    target = rel.get("target_version") or rel.get("rollback_to")
    if not isinstance(target, int) or target not in obj.versions:
        return None
    live = [n for n in obj.active if n != target]
    frm = live[0] if live else None
    if frm is None:
        return {"from": None, "to": target, "summary": {"changes": 0, "breaking": 0}, "note": "first activation"}
    return diff_versions(obj, frm, target)


@router.get("/releases", tags=["Releases"], summary="List releases (newest first)")
async def release_list(
    request: Request,
    state_: str | None = Query(None, alias="state", description=", ".join(RELEASE_STATES)),
    kind: str | None = Query(None),
    object_id: str | None = Query(None, alias="id"),
) -> Response:
    state = _state(request)
    items = [
        _view(obj, rid, rel, state)
        for k in RELEASE_KINDS
        if kind in (None, k)
        for obj in state.objects(k)
        if object_id in (None, obj.id)
        for rid, rel in obj.releases.items()
        if state_ in (None, rel.get("state"))
    ]
    items.sort(key=lambda v: str(v.get("requested_at", "")), reverse=True)
    return json_response({"data": items, "total": len(items)})


@router.get("/releases/{release_id}", tags=["Releases"], summary="One release with its events")
async def release_get(release_id: str, request: Request) -> Response:
    kind, object_id = _parse_rid(release_id)
    state = _state(request)
    obj = _object(state, kind, object_id)
    if release_id not in obj.releases:
        raise NotFound(f"release '{release_id}' not found")
    return _data(_view(obj, release_id, obj.releases[release_id], state))


async def _review(request: Request, release_id: str, event: str) -> Response:
    kind, object_id = _parse_rid(release_id)
    body = await _body(request, required=False) or {}
    comment = body.get("comment") if isinstance(body, dict) else None
    state = _state(request)
    obj = _object(state, kind, object_id)
    by, role = _who(request)
    op = ReviewRelease(release_id, event, by, role, _policy_of(state, obj), comment)
    after: ObjectState = (await _apply(request, kind, object_id, op))["object"]
    return _data(_view(after, release_id, after.releases[release_id], state))


@router.post("/releases/{release_id}/approve", tags=["Releases"], summary="Approve a release")
async def release_approve(release_id: str, request: Request) -> Response:
    return await _review(request, release_id, "approved")


@router.post("/releases/{release_id}/reject", tags=["Releases"], summary="Reject a release")
async def release_reject(release_id: str, request: Request) -> Response:
    return await _review(request, release_id, "rejected")


@router.post("/releases/{release_id}/comments", tags=["Releases"], summary="Comment on a release")
async def release_comment(release_id: str, request: Request) -> Response:
    return await _review(request, release_id, "commented")


@router.post("/releases/{release_id}/cancel", tags=["Releases"], summary="Cancel a release (author or admin)")
async def release_cancel(release_id: str, request: Request) -> Response:
    return await _review(request, release_id, "cancelled")


@router.post("/releases/{release_id}/execute", tags=["Releases"], summary="Execute an approved release")
async def release_execute(release_id: str, request: Request) -> Response:
    kind, object_id = _parse_rid(release_id)
    body = await _body(request, required=False) or {}
    pct = body.get("rollout_percentage") if isinstance(body, dict) else None
    state = _state(request)
    obj = _object(state, kind, object_id)
    by, role = _who(request)
    rel = obj.releases.get(release_id) or {}
    suite = None
    if rel.get("action") == "activate" and rel.get("state") == "approved":
        suite = await get_admin_service(request).prepare_activation(kind, obj)  # topics, test-suite gate
    op = ExecuteRelease(release_id, by, role, _policy_of(state, obj), pct, test_suite=suite)
    after: ObjectState = (await _apply(request, kind, object_id, op))["object"]
    return _data(_view(after, release_id, after.releases[release_id], state))


# -- evidence for the reviewer: semantic diff -----------------------------------------------------------
def diff_versions(obj: ObjectState, frm: int | None, to: int | None) -> dict[str, Any]:
    """Diff two versions (default: the newest active version -> the draft, else the latest)."""
    if not obj.versions:
        raise NotFound(f"{obj.kind} '{obj.id}' has no versions")
    to = to if to is not None else (obj.draft or obj.latest)
    if frm is None:
        older = [n for n in obj.active if n != to] or [n for n in sorted(obj.versions, reverse=True) if n < (to or 0)]
        frm = older[0] if older else to
    for n in (frm, to):
        if n not in obj.versions:
            raise NotFound(f"{obj.kind} '{obj.id}' has no version {n}")
    assert frm is not None and to is not None
    diff = diff_definitions(obj.kind, obj.versions[frm], obj.versions[to]).to_json()
    return {"kind": obj.kind, "id": obj.id, "from": frm, "to": to, **diff}


def _diff_route(kind: str, plural: str) -> None:
    @router.get(f"/{plural}/{{object_id}}/diff", tags=["Releases"], summary=f"Semantic diff of two {kind} versions",
                name=f"diff_{kind}")  # fmt: skip
    async def diff(
        object_id: str,
        request: Request,
        frm: int | None = Query(None, alias="from", ge=1, le=2**31 - 1),
        to: int | None = Query(None, ge=1, le=2**31 - 1),
    ) -> Response:
        return _data(diff_versions(_object(_state(request), kind, object_id), frm, to))


for _kind in RELEASE_KINDS:
    _diff_route(_kind, f"{_kind}s")


# -- evidence for the reviewer: impact analysis on retained traffic ---------------------------------------
MAX_REPLAY = 10_000


def _start(value: Any) -> tuple[int | None, int | None]:
    """`from`: an offset (int, every partition) or an ISO-8601 time -> (offset, epoch ms)."""
    if value is None:
        return None, None
    if type(value) is int and value >= 0:
        return value, None
    if isinstance(value, str):
        from datetime import datetime

        try:
            return None, int(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError:
            pass
    raise BadRequest(f"'from' must be an offset (integer >= 0) or an ISO-8601 time, got {value!r}")


def replay_channel(request: Request, channel: str, body: dict[str, Any]) -> dict[str, Any]:
    """Read the channel's retained records (read-only) and compare the candidate with the live version."""
    from app.engine.impact import Sample, compare_versions
    from app.kafka.admin import create_admin, topic_partitions
    from app.kafka.retained import read_partition, start_offsets_at
    from app.worker.codec import decode_json, decode_raw

    reader = _writer(request).reader
    settings = reader.settings
    view = reader.snapshot.channels.get(channel)
    if view is None:
        raise NotFound(f"channel '{channel}' is not active")
    cand = body.get("candidate")
    if (
        not isinstance(cand, dict)
        or not valid_object_id(cand.get("workflow_id"))
        or type(cand.get("version")) is not int
    ):
        raise BadRequest('candidate must be {"workflow_id": "<id>", "version": <n>}')
    wf = _object(reader.state, "workflow", cand["workflow_id"])
    if cand["version"] not in wf.versions:
        raise NotFound(f"workflow '{wf.id}' has no version {cand['version']}")
    if not wf.active:
        raise BadRequest(f"workflow '{wf.id}' has no active version to compare with")
    live_n = wf.active[0]
    limit = body.get("limit", 1000)
    if type(limit) is not int or not 1 <= limit <= MAX_REPLAY:
        raise BadRequest(f"limit must be an integer between 1 and {MAX_REPLAY}")
    offset, ts = _start(body.get("from"))
    topic = view.channel.topic
    partitions = topic_partitions(create_admin(settings)).get(topic) or 0
    starts = start_offsets_at(settings, topic, partitions, ts) if ts is not None else [offset] * partitions
    raw = view.channel.envelope
    samples: list[Sample] = []
    undecodable = 0
    for p in range(partitions):
        for m in read_partition(settings, topic, p, timeout=60, start=starts[p], limit=limit - len(samples)):
            if ts is not None and m.timestamp()[1] < ts:
                continue  # a broker whose time index answers loosely (Tansu) starts us too early
            try:
                data, metadata = decode_raw(m.value()) if raw == "raw" else decode_json(m.value())
            except Exception:
                undecodable += 1  # the worker dead-letters these; neither version would see them
                continue
            key = m.key()
            samples.append(Sample(f"{topic}[{p}]@{m.offset()}", key.decode(errors="replace") if key else None,
                                  data, metadata))  # fmt: skip
        if len(samples) >= limit:
            break
    from app.config_store.state import definition_of

    live_doc = {"id": wf.id, **definition_of("workflow", wf.versions[live_n])}
    cand_doc = {"id": wf.id, **definition_of("workflow", wf.versions[cand["version"]])}
    report = compare_versions(live_doc, cand_doc, samples)
    out = {
        "channel": channel,
        "topic": topic,
        "workflow_id": wf.id,
        "live_version": live_n,
        "candidate_version": cand["version"],
        "undecodable": undecodable,
        **report.to_json(),
    }
    if body.get("write_tests"):
        out["tests"] = report.as_tests()
    return out


@router.post("/channels/{object_id}/replay", tags=["Releases"], summary="Impact analysis on retained records")
async def channel_replay(object_id: str, request: Request) -> Response:
    """Replays the channel's retained records through a candidate workflow version and the live one, side
    effects stubbed, and reports consistent / changed / errored. Reads only: nothing is produced anywhere.
    With `release`, the summary is recorded on that release as an `impact` event."""
    import asyncio

    body = await _body(request)
    if not isinstance(body, dict):
        raise BadRequest("replay request must be a JSON object")
    unknown = set(body) - {"candidate", "from", "limit", "write_tests", "release"}
    if unknown:
        raise BadRequest(f"unknown field(s): {', '.join(sorted(unknown))}")
    report = await asyncio.to_thread(replay_channel, request, object_id, body)
    rid = body.get("release")
    if isinstance(rid, str):
        kind, rel_object = _parse_rid(rid)
        _check_scope(request, kind, rel_object, None)
        state = _state(request)
        obj = _object(state, kind, rel_object)
        summary = {k: report[k] for k in ("channel", "total", "consistent", "changed", "errored")}
        by, role = _who(request)
        op = ReviewRelease(rid, "impact", by, role, _policy_of(state, obj), comment=None, details=summary)
        await _apply(request, kind, rel_object, op)
        report["attached_to"] = rid
    return _data(report)


# -- policies (admin) --------------------------------------------------------------------------------
@router.put("/policies/{name}", tags=["Releases"], summary="Create or replace a release policy")
async def policy_put(name: str, request: Request) -> Response:
    body = await _body(request)
    try:
        doc = ReleasePolicyDoc.model_validate(body)
    except ValueError as exc:
        raise ValidationFailed(f"invalid release policy: {exc}") from None
    await _writer(request).apply("policy", name, Put(doc.model_dump(mode="json")), actor=_actor(request))
    return _data({"name": name, **doc.model_dump(mode="json")})


@router.get("/policies", tags=["Releases"], summary="List release policies")
async def policy_list(request: Request) -> Response:
    state = _state(request)
    items = [{"name": n, **p.model_dump(mode="json")} for n, p in state.policies()]
    return json_response({"data": items, "total": len(items)})


@router.delete("/policies/{name}", status_code=204, tags=["Releases"], summary="Delete a release policy")
async def policy_delete(name: str, request: Request) -> Response:
    if _state(request).get("policy", name) is None:
        raise NotFound(f"release policy '{name}' not found")
    await _writer(request).apply("policy", name, Delete(), actor=_actor(request))
    return Response(status_code=204)
