"""Read side of the audit trail (`quasar.audit`) for `GET /api/v1/admin/audit-logs`.

Entries are normalised to Orion's audit-log fields (`principal`, `action`, `resource_type`,
`resource_id`, `details`, `created_at`). The writer produces the audit record before an admin write
returns, so a later listing includes it. (Tansu can under-report the end offset when the last batch
holds several records; audit records are written one at a time, and a miss only delays an entry.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from app.errors import ServiceUnavailable
from app.kafka.config import reader_config
from app.kafka.names import TopicNames
from app.settings import Settings

__all__ = ["AuditLog", "DirectWriteAuditor", "normalise_audit"]

log = logging.getLogger(__name__)


def normalise_audit(value: Any, *, offset: int, partition: int, timestamp_ms: int | None) -> dict[str, Any]:
    """One audit record (`app.config_store.writer`: who, what, when, kind, id, before/after ...) as an
    Orion audit-log entry; everything else rides in `details`."""
    body = value if isinstance(value, dict) else {"value": value}
    created = body.get("when") or body.get("created_at")
    if created is None and timestamp_ms:
        created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp_ms / 1000))
    known = {
        "who",
        "what",
        "when",
        "kind",
        "id",
        "principal",
        "action",
        "resource_type",
        "resource_id",
        "created_at",
    }
    return {
        "id": f"{partition}-{offset}",
        "principal": body.get("who", body.get("principal")),
        "action": body.get("what", body.get("action")),
        "resource_type": body.get("kind", body.get("resource_type")),
        "resource_id": body.get("id", body.get("resource_id")),
        "details": {k: v for k, v in body.items() if k not in known},
        "created_at": created,
        "offset": offset,
        "partition": partition,
    }


class AuditLog:
    """Reads the audit topic on demand (no background thread, nothing to stop): each call assigns every
    partition from the beginning and reads up to the end offsets observed at call time, bounded by
    `read_timeout`. Admin changes are rare, so the topic stays small; only the newest `max_entries` are
    kept."""

    def __init__(self, settings: Settings, *, max_entries: int = 10_000, read_timeout: float = 10.0) -> None:
        self.settings = settings
        self.topic = TopicNames(settings.topic_prefix).audit
        self.max_entries = max_entries
        self.read_timeout = read_timeout
        self.last_error: str | None = None

    def _read(self) -> list[dict[str, Any]]:
        consumer = Consumer(reader_config(self.settings, client_id=f"quasar-audit-{self.settings.instance_id}"))
        entries: deque[dict[str, Any]] = deque(maxlen=self.max_entries)
        try:
            # List all topics and look the audit topic up by name: asking for it by name would make Tansu
            # create it (with 4 partitions) when it does not exist yet.
            md = consumer.list_topics(timeout=5)
            topic = md.topics.get(self.topic)
            if topic is None or topic.error is not None:
                return []
            ends: dict[int, int] = {}
            for p in sorted(topic.partitions):
                low, high = consumer.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5)
                if high > low:
                    ends[p] = high
            if not ends:
                return []
            consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in ends])
            seen_direct: set[Any] = set()  # every gateway audits a direct write: keep one entry per record
            positions = {p: -1 for p in ends}
            deadline = time.monotonic() + self.read_timeout
            while any(positions[p] + 1 < ends[p] for p in ends) and time.monotonic() < deadline:
                for m in consumer.consume(500, 0.2):
                    if m.error() is not None:
                        continue
                    partition, offset = int(m.partition() or 0), int(m.offset() or 0)
                    positions[partition] = offset
                    raw = m.value()
                    try:
                        value = orjson.loads(raw) if raw is not None else None
                    except orjson.JSONDecodeError:
                        value = {"raw": (raw or b"").decode(errors="replace")}
                    if isinstance(value, dict) and value.get("source") == DIRECT_WRITE:
                        if value.get("config_offset") in seen_direct:
                            continue
                        seen_direct.add(value.get("config_offset"))
                    entries.append(
                        normalise_audit(value, offset=offset, partition=partition, timestamp_ms=m.timestamp()[1])
                    )
            return list(entries)
        except KafkaException as exc:
            self.last_error = str(exc)
            raise ServiceUnavailable(f"cannot read the audit topic {self.topic}: {exc}") from None
        finally:
            consumer.close()

    async def entries(self) -> list[dict[str, Any]]:
        """Every audit entry (newest `max_entries`), in log order."""
        return await asyncio.to_thread(self._read)

    async def __call__(self) -> list[dict[str, Any]]:
        return await self.entries()


DIRECT_WRITE = "direct-write"


class DirectWriteAuditor:
    """Audits config records that no ConfigWriter audited: produced straight onto the config topic (a GitOps
    tool, a script). Every gateway does it for each such record it folds once caught up; the read side keeps
    one entry per config offset. The principal is what the record claims (`actor`): topic write access is
    the credential there (docs/security.md)."""

    def __init__(self, reader: Any) -> None:
        self.reader = reader
        self.topic = TopicNames(reader.settings.topic_prefix).audit
        self._pending: set[asyncio.Future[Any]] = set()

    def __call__(self, outcomes: list[Any]) -> None:
        for o in outcomes:
            if o.audited or o.kind is None or o.status not in ("applied", "refused"):
                continue
            record = {
                "who": o.actor or "unknown",
                "what": o.reason if o.status == "applied" else f"refused: {o.reason}",
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "kind": o.kind,
                "id": o.id,
                "revision": o.revision,
                "config_offset": o.offset,
                "source": DIRECT_WRITE,
                "status": o.status,
            }
            task = asyncio.ensure_future(self.reader.write(f"{o.kind}/{o.id}", orjson.dumps(record), topic=self.topic))
            self._pending.add(task)
            task.add_done_callback(self._done)

    def _done(self, task: asyncio.Future[Any]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("could not audit a direct config write: %s", task.exception())
