"""Channel operations in the admin API: pause, resume, seek (replay from a time or an offset), status.

Each request is a runtime record on the config topic (app/config_store/channel_ops.py) that every worker
obeys; the answer returns once the record is written. Distinct from impact analysis
(`POST /channels/{id}/replay`, app/gateway/admin_releases.py), which reads retained records and changes
nothing: these routes move the worker group's consumption.

- `POST /channels/{id}/pause` / `resume`: the channel stops / continues being consumed on every worker;
  sync calls to a paused channel get 503 `CHANNEL_PAUSED`, async ones are accepted and wait on the topic.
- `POST /channels/{id}/offsets` `{"from": "<ISO 8601>"}` or `{"from_offset": n}`, optionally
  `"partitions": [..]` and `"topic"` (must be the channel's): a seek request, applied once per partition
  by whichever worker owns it (202).
- `GET /channels/{id}/consumption`: paused or not, the current seek request and where it was applied, and
  per partition the group's committed offset, the end offset and the lag.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, Depends, Request, Response

from app.config_store.channel_ops import (
    SeekRequest,
    parse_instant,
    pause_info,
    request_seek,
    seek_applied,
    seek_request,
    set_paused,
)
from app.errors import BadRequest, Conflict, NotFound, ServiceUnavailable
from app.gateway.admin import _actor, _authenticate, _body, _data
from app.kafka.admin import create_admin, group_positions, topic_partitions
from app.kafka.names import TopicNames
from app.settings import Settings

__all__ = ["router"]

router = APIRouter(prefix="/api/v1/admin", tags=["Channels"], dependencies=[Depends(_authenticate)])

_MAX_OFFSET = 2**63 - 1


def _reader(request: Request) -> Any:
    reader = getattr(request.app.state, "config_reader", None)
    if reader is None or not hasattr(reader, "write_runtime"):
        raise ServiceUnavailable("channel operations unavailable: the config store is not running on this instance")
    return reader


def _settings(request: Request) -> Settings:
    return getattr(request.app.state, "settings", None) or Settings()


def _channel_name(reader: Any, object_id: str) -> str:
    """The channel's name (what workers and gateways know it by); 404 for an unknown or deleted channel."""
    current = reader.state.get("channel", object_id)
    if current is None or current.deleted or current.latest is None:
        raise NotFound(f"channel '{object_id}' not found")
    name = current.versions[current.latest].get("name")
    return name if isinstance(name, str) and name else object_id


def _active_topic(reader: Any, object_id: str, name: str) -> str:
    view = reader.snapshot.channels.get(name)
    if view is None:
        raise Conflict(f"channel '{object_id}' is not active: nothing consumes it, so there is no position to move")
    return str(view.channel.topic)


async def _audit(reader: Any, request: Request, object_id: str, what: str, offset: int, **details: Any) -> None:
    """An entry on the audit topic (`GET /audit-logs`), as the config writer makes for every admin change."""
    settings = _settings(request)
    record = {
        "who": _actor(request),
        "what": what,
        "when": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "kind": "channel",
        "id": object_id,
        "config_offset": offset,
        **details,
    }
    await reader.write(f"channel/{object_id}", orjson.dumps(record), topic=TopicNames(settings.topic_prefix).audit)


def _state(reader: Any, settings: Settings, name: str, topic: str | None) -> dict[str, Any]:
    request = seek_request(reader, name)
    return {
        "channel": name,
        "topic": topic,
        "group": f"{settings.topic_prefix}worker",
        "paused": pause_info(reader, name) is not None,
        "paused_by": pause_info(reader, name),
        "seek": None
        if request is None
        else {**request.to_json(), "applied": {str(p): a for p, a in sorted(seek_applied(reader, name).items())}},
    }


async def _set_paused(object_id: str, request: Request, paused: bool) -> Response:
    reader = _reader(request)
    name = _channel_name(reader, object_id)
    offset = await set_paused(reader, name, paused, _actor(request))
    await _audit(reader, request, object_id, "pause" if paused else "resume", offset, channel=name)
    return _data({"channel": name, "paused": paused})


@router.post("/channels/{object_id}/pause", summary="Pause a channel on every worker")
async def channel_pause(object_id: str, request: Request) -> Response:
    return await _set_paused(object_id, request, True)


@router.post("/channels/{object_id}/resume", summary="Resume a paused channel")
async def channel_resume(object_id: str, request: Request) -> Response:
    return await _set_paused(object_id, request, False)


def _seek_body(body: Any, topic: str, partitions: int) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise BadRequest('the body must be a JSON object: {"from": "<ISO 8601 timestamp>"} or {"from_offset": n}')
    unknown = sorted(set(body) - {"from", "from_offset", "partitions", "topic"})
    if unknown:
        raise BadRequest(f"unknown field(s) {unknown}: expected from, from_offset, partitions, topic")
    given_topic = body.get("topic", topic)
    if given_topic != topic:
        raise BadRequest(f"topic {given_topic!r} is not this channel's topic ({topic!r}): only its own can be sought")
    if ("from" in body) == ("from_offset" in body):
        raise BadRequest("give exactly one of from (an ISO 8601 timestamp) and from_offset")
    out: dict[str, Any] = {}
    if "from" in body:
        out["from_ms"] = parse_instant(body["from"], "from")
    else:
        offset = body["from_offset"]
        if type(offset) is not int or not 0 <= offset <= _MAX_OFFSET:
            raise BadRequest(f"from_offset must be a non-negative integer, got {offset!r}")
        out["from_offset"] = offset
    parts = body.get("partitions")
    if parts is not None:
        if not isinstance(parts, list) or not parts or any(type(p) is not int for p in parts):
            raise BadRequest("partitions must be a non-empty list of partition numbers")
        foreign = sorted({p for p in parts if not 0 <= p < partitions})
        if foreign:
            raise BadRequest(f"partition(s) {foreign} are not partitions of {topic} (it has {partitions})")
        out["partitions"] = tuple(sorted(set(parts)))
    return out


async def _offset_in_range(settings: Settings, topic: str, offset: int, partitions: tuple[int, ...] | None) -> None:
    """400 when `offset` is past the end of every chosen partition (a typo, not a replay); an offset past the
    end of some of them puts those at their end (the worker keeps positions within each partition)."""
    group = f"{settings.topic_prefix}worker"
    found = await asyncio.to_thread(lambda: group_positions(create_admin(settings), [(group, topic)]))
    ends = {p: end for (_g, _t, p), (_c, end) in found.items() if partitions is None or p in partitions}
    if ends and offset > max(ends.values()):
        raise BadRequest(f"from_offset {offset} is past the end of {topic} (end offsets: {dict(sorted(ends.items()))})")


@router.post("/channels/{object_id}/offsets", status_code=202, summary="Move a channel's position (replay or skip)")
async def channel_seek(object_id: str, request: Request) -> Response:
    reader = _reader(request)
    name = _channel_name(reader, object_id)
    body = await _body(request)
    topic = _active_topic(reader, object_id, name)
    settings = _settings(request)
    count = (await asyncio.to_thread(lambda: topic_partitions(create_admin(settings)))).get(topic)
    if not count:
        raise Conflict(f"topic {topic!r} of channel '{object_id}' does not exist yet")
    wanted = _seek_body(body, topic, count)
    if "from_offset" in wanted:
        await _offset_in_range(settings, topic, wanted["from_offset"], wanted.get("partitions"))
    seek = SeekRequest.new(name, topic, by=_actor(request), **wanted)
    offset = await request_seek(reader, seek)
    await _audit(reader, request, object_id, "seek", offset, seek=seek.to_json())
    return _data({**seek.to_json(), "applied": {}}, 202)


@router.get("/channels/{object_id}/consumption", summary="Pause state, seek request and lag of a channel")
async def channel_consumption(object_id: str, request: Request) -> Response:
    reader = _reader(request)
    name = _channel_name(reader, object_id)
    view = reader.snapshot.channels.get(name)
    topic = str(view.channel.topic) if view is not None else None
    settings = _settings(request)
    state = _state(reader, settings, name, topic)
    partitions: list[dict[str, Any]] = []
    if topic is not None:
        group = state["group"]
        try:
            found = await asyncio.to_thread(lambda: group_positions(create_admin(settings), [(group, topic)]))
        except Exception as exc:
            raise ServiceUnavailable(f"cannot read the offsets of {topic}: {exc}") from None
        for (_g, _t, p), (committed, end) in sorted(found.items()):
            partitions.append(
                {"partition": p, "committed": committed, "end": end, "lag": max(0, end - max(0, committed))}
            )
    state["partitions"] = partitions
    state["lag"] = sum(p["lag"] for p in partitions)
    return _data(state)
