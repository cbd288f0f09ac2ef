"""Channel operations as runtime records on the config topic: pause/resume and seek (replay) requests.

The same mechanism as the cluster-wide circuit breakers (app/connectors/breaker_cluster.py): every worker
and gateway folds the config topic, so a record written here is seen by all of them, and the topic is
compacted, so the latest record per key survives restarts.

- `__runtime__/channel-pause/<channel>`: the channel is paused (`{"channel", "by", "at"}`); a tombstone
  resumes it. Workers pause the channel's partitions in their consumer; gateways refuse its sync calls.
- `__runtime__/channel-seek/<channel>`: the latest seek request of the channel (`SeekRequest`): move the
  worker group's position on the channel's partitions to a time or an offset, once.
- `__runtime__/channel-seek-applied/<channel>/<partition>`: which request the owner of that partition
  applied (and where it put the position): a request is applied once per partition, whichever worker owns
  it, across restarts and rebalances.

Records are duck-typed against the config reader (`write_runtime`, `runtime_records`): a test double or
the CLI's reader work as well.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from app.config_store.state import RUNTIME_PREFIX
from app.errors import BadRequest, ServiceUnavailable

__all__ = [
    "PAUSE_PREFIX",
    "SEEK_APPLIED_PREFIX",
    "SEEK_PREFIX",
    "ChannelPaused",
    "RuntimeRecords",
    "SeekRequest",
    "is_paused",
    "mark_seek_applied",
    "parse_instant",
    "pause_info",
    "request_seek",
    "seek_applied",
    "seek_request",
    "set_paused",
]

PAUSE_PREFIX = "channel-pause/"
SEEK_PREFIX = "channel-seek/"
SEEK_APPLIED_PREFIX = "channel-seek-applied/"


class ChannelPaused(ServiceUnavailable):
    """A sync call to a paused channel: refused at once instead of waiting for its timeout."""

    code = "CHANNEL_PAUSED"


class RuntimeRecords(Protocol):
    """What the config reader offers for runtime records."""

    runtime_records: dict[str, bytes]

    async def write_runtime(self, key: str, value: bytes | None) -> int: ...


async def _write(log: RuntimeRecords, key: str, value: bytes | None) -> int:
    """Write a runtime record and wait (bounded) until this reader folded it: a status read right after
    the answer sees it (read-your-writes, as for every admin write)."""
    offset = await log.write_runtime(key, value)
    wait = getattr(log, "wait_for_offset", None)
    if wait is not None:
        await wait(offset, 30.0)
    return offset


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(raw: bytes | None) -> dict[str, Any] | None:
    if raw is None:
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return value if isinstance(value, dict) else None


def parse_instant(text: object, what: str = "timestamp") -> int:
    """An ISO 8601 instant with a time zone (`2026-12-01T00:00:00Z`) -> epoch milliseconds; 400 otherwise."""
    if not isinstance(text, str) or not text.strip():
        raise BadRequest(f"{what} must be an ISO 8601 timestamp such as 2026-12-01T00:00:00Z, got {text!r}")
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError:
        raise BadRequest(f"{what} {text!r} is not an ISO 8601 timestamp (e.g. 2026-12-01T00:00:00Z)") from None
    if when.tzinfo is None:
        raise BadRequest(f"{what} {text!r} has no time zone: add Z (UTC) or an offset such as +01:00")
    ms = int(when.timestamp() * 1000)
    if ms < 0:
        raise BadRequest(f"{what} {text!r} is before 1970")
    return ms


# -- pause / resume ----------------------------------------------------------------------------------
def is_paused(log: Any, channel: str) -> bool:
    """Whether `channel` is paused (one dict lookup: the gateway asks on every sync call)."""
    records = getattr(log, "runtime_records", None)
    return records is not None and f"{RUNTIME_PREFIX}{PAUSE_PREFIX}{channel}" in records


def pause_info(log: Any, channel: str) -> dict[str, Any] | None:
    """Who paused `channel` and when, or None when it is not paused."""
    records = getattr(log, "runtime_records", None) or {}
    raw = records.get(f"{RUNTIME_PREFIX}{PAUSE_PREFIX}{channel}")
    if raw is None:
        return None
    return _json(raw) or {"channel": channel}


async def set_paused(log: RuntimeRecords, channel: str, paused: bool, by: str) -> int:
    """Pause (a record) or resume (a tombstone) `channel` on every instance; returns the record's offset."""
    value = orjson.dumps({"channel": channel, "by": by, "at": _now_iso()}) if paused else None
    return await _write(log, PAUSE_PREFIX + channel, value)


# -- seek requests -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SeekRequest:
    """Move the worker group's position on a channel's partitions: to the first record at or after
    `from_ms`, or to `from_offset`; `partitions` None = every partition of `topic`."""

    id: str
    channel: str
    topic: str
    from_ms: int | None = None
    from_offset: int | None = None
    partitions: tuple[int, ...] | None = None
    requested_at: str = ""
    by: str = ""

    @classmethod
    def new(
        cls,
        channel: str,
        topic: str,
        *,
        from_ms: int | None = None,
        from_offset: int | None = None,
        partitions: tuple[int, ...] | None = None,
        by: str = "",
    ) -> SeekRequest:
        if (from_ms is None) == (from_offset is None):
            raise BadRequest("give exactly one of from (a timestamp) and from_offset")
        return cls(uuid.uuid4().hex, channel, topic, from_ms, from_offset, partitions, _now_iso(), by)

    def covers(self, topic: str, partition: int) -> bool:
        return topic == self.topic and (self.partitions is None or partition in self.partitions)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "channel": self.channel,
            "topic": self.topic,
            "partitions": list(self.partitions) if self.partitions is not None else None,
            "requested_at": self.requested_at,
            "by": self.by,
        }
        if self.from_ms is not None:
            out["from_ms"] = self.from_ms
            out["from"] = datetime.fromtimestamp(self.from_ms / 1000, UTC).isoformat(timespec="milliseconds")
        else:
            out["from_offset"] = self.from_offset
        return out

    @classmethod
    def from_json(cls, doc: Mapping[str, Any]) -> SeekRequest | None:
        """The request a record holds; None for a malformed one (ignored, never applied half-way)."""
        ident, channel, topic = doc.get("id"), doc.get("channel"), doc.get("topic")
        from_ms, from_offset, parts = doc.get("from_ms"), doc.get("from_offset"), doc.get("partitions")
        if not (isinstance(ident, str) and isinstance(channel, str) and isinstance(topic, str)):
            return None
        if not ((type(from_ms) is int) ^ (type(from_offset) is int)):
            return None
        if parts is not None and not (isinstance(parts, list) and all(type(p) is int for p in parts)):
            return None
        return cls(
            ident,
            channel,
            topic,
            from_ms if type(from_ms) is int else None,
            from_offset if type(from_offset) is int else None,
            tuple(parts) if parts is not None else None,
            str(doc.get("requested_at", "")),
            str(doc.get("by", "")),
        )


async def request_seek(log: RuntimeRecords, request: SeekRequest) -> int:
    """Publish `request` (it replaces any earlier request of the channel); returns the record's offset."""
    return await _write(log, SEEK_PREFIX + request.channel, orjson.dumps(request.to_json()))


def seek_request(log: Any, channel: str) -> SeekRequest | None:
    """The latest seek request of `channel`, if any."""
    records = getattr(log, "runtime_records", None) or {}
    doc = _json(records.get(f"{RUNTIME_PREFIX}{SEEK_PREFIX}{channel}"))
    return SeekRequest.from_json(doc) if doc is not None else None


def seek_applied(log: Any, channel: str) -> dict[int, dict[str, Any]]:
    """Partition -> `{"request", "offset", "instance", "at"}`: the last seek request applied there."""
    prefix = f"{RUNTIME_PREFIX}{SEEK_APPLIED_PREFIX}{channel}/"
    out: dict[int, dict[str, Any]] = {}
    for key, raw in list((getattr(log, "runtime_records", None) or {}).items()):
        if key.startswith(prefix) and key[len(prefix) :].isdigit():
            doc = _json(raw)
            if doc is not None:
                out[int(key[len(prefix) :])] = doc
    return out


async def mark_seek_applied(
    log: RuntimeRecords, request: SeekRequest, partition: int, offset: int, instance: str
) -> int:
    """Record that `request` was applied on `partition` (the position was moved to `offset` and committed)."""
    value = {"request": request.id, "topic": request.topic, "offset": offset, "instance": instance, "at": time.time()}
    return await log.write_runtime(f"{SEEK_APPLIED_PREFIX}{request.channel}/{partition}", orjson.dumps(value))
