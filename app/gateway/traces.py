"""Trace lookup for `GET /api/v1/data/traces[/{id}]`, answered by any gateway instance.

Design: every gateway tails `quasar.traces` (all partitions, assigned directly, no consumer group) into
a bounded in-memory index (LRU by last update). Kafka has no lookup by key, so answering on demand
would mean scanning the topic per request; tailing costs one orjson parse per trace record and keeps
lookups O(1). The index starts a window behind the end of each partition (watermarks are only used as
a starting hint, so Tansu's inexact end offsets cost nothing but a few extra records) and is bounded by
`capacity`: traces older than the window are not served (the topic still keeps them for other tools).

Parsing is lazy: nearly every trace record (one per sync request) is never looked up, so a record whose
key is its id (`{"id":"<key>"` prefix, what every Quasar writer produces) is kept as raw bytes and only
parsed and merged, in arrival order, when its trace is read. Other records are parsed at once.

Records are merged per trace id, whatever partition they arrive on (the gateway's `pending` record and
the worker's result may be partitioned by different clients): fields are merged and the status never
moves backwards (pending < running < completed/failed).

Memory is bounded by entry count and by bytes (`max_bytes`: raw record sizes, or the encoded size of a
merged trace). Listing never parses into the index: raw records are merged transiently, one at a time,
and only the requested page is copied (4 concurrent full listings used to parse and keep every trace:
gateway RSS 195 -> 529 MB). A page also stops at `max_page_bytes`.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from app.gateway.reply_router import poll_batch
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import reader_config
from app.kafka.names import TopicNames
from app.settings import Settings

__all__ = ["TRACE_STATUSES", "TraceIndex", "merge_trace", "orion_trace"]

log = logging.getLogger("quasar.gateway.traces")

TRACE_STATUSES: tuple[str, ...] = ("pending", "running", "completed", "failed", "duplicate")
# A status never moves backwards; the final ones rank equal (a redelivery may change its outcome).
_RANK = {"pending": 0, "running": 1, "completed": 2, "failed": 2, "duplicate": 2}


def merge_trace(current: Mapping[str, Any] | None, update: Mapping[str, Any]) -> dict[str, Any]:
    """Merge a trace record into what is known: fields accumulate, the status never goes backwards."""
    if current is None:
        return dict(update)
    merged = dict(current)
    old_rank = _RANK.get(str(current.get("status")), -1)
    new_rank = _RANK.get(str(update.get("status")), -1)
    for key, value in update.items():
        if key == "status" and new_rank < old_rank:
            continue
        merged[key] = value
    return merged


def orion_trace(trace: Mapping[str, Any]) -> dict[str, Any]:
    """A trace as Orion shapes it, Quasar's own fields kept: `message` is the processed message
    (`id`, `payload`, `context{data, metadata, temp_data}`, `audit_trail`, `errors`).

    Built from what the trace records hold: the worker's result (`{id, status, data, errors}`), the
    gateway's `payload` (async requests) and, when a channel traces per task, `metadata`/`audit_trail`.
    `temp_data` is scratch space Orion never returns, so it is empty here too.
    """
    out = dict(trace)
    if isinstance(out.get("message"), Mapping):
        return out
    result = trace.get("result")
    result = result if isinstance(result, Mapping) else {}
    errors = result.get("errors")
    if errors is None and isinstance(trace.get("error"), Mapping):
        errors = [trace["error"]]
    out["message"] = {
        "id": result.get("id") or trace.get("request_id") or trace.get("id"),
        "payload": trace.get("payload"),
        "context": {
            "data": result.get("data", {}),
            "metadata": trace.get("metadata", {}),
            "temp_data": {},
        },
        "audit_trail": trace.get("audit_trail", []),
        "errors": errors or [],
    }
    return out


class TraceIndex:
    """Bounded, merged view of recent traces, fed by a tail of `quasar.traces`."""

    def __init__(
        self,
        settings: Settings,
        *,
        capacity: int = 20_000,
        fetch_wait_ms: int = 200,
        max_bytes: int = 64 * 1024 * 1024,
        max_page_bytes: int = 4 * 1024 * 1024,
    ) -> None:
        self.settings = settings
        self.fetch_wait_ms = fetch_wait_ms
        self.topic = TopicNames(settings.topic_prefix).traces
        self.capacity = capacity
        self.max_bytes = max_bytes
        self.max_page_bytes = max_page_bytes
        # Per trace id: [merged doc or None, raw records not merged yet (arrival order) or None, bytes].
        self._traces: OrderedDict[str, list[Any]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = False
        self.last_error: str | None = None

    # -- reading ------------------------------------------------------------------------------------

    def get(self, trace_id: str) -> dict[str, Any] | None:
        with self._lock:
            trace = self._resolve(trace_id)
            return dict(trace) if trace is not None else None

    def list(
        self,
        *,
        channel: str | None = None,
        status: str | None = None,
        mode: str | None = None,
        limit: int = 50,
        offset: int = 0,
        visible: Callable[[Any], bool] | None = None,
    ) -> tuple[list[dict[str, Any]], int]:
        """Newest first, filtered (and by `visible(channel)` when given); returns (page, total matching).

        The page ends early when it reaches `max_page_bytes` (the caller pages on from `offset + len`)."""
        with self._lock:
            # References only: raw lists are copied so the tail thread may go on appending.
            entries = [
                (tid, e[0], builtins.list(e[1]) if e[1] is not None else None)
                for tid, e in reversed(self._traces.items())
            ]
        page: list[dict[str, Any]] = []
        page_bytes = 0
        full = False
        total = 0
        for trace_id, merged, raws in entries:
            doc = merged if raws is None else _merge_raws(trace_id, merged, raws)
            if doc is None:
                continue
            if (
                (channel is not None and doc.get("channel") != channel)
                or (status is not None and doc.get("status") != status)
                or (mode is not None and doc.get("mode") != mode)
                or (visible is not None and not visible(doc.get("channel")))
            ):
                continue
            total += 1
            if full or total <= offset:
                continue
            size = len(orjson.dumps(doc, default=str))
            if page and page_bytes + size > self.max_page_bytes:
                full = True
                continue
            page.append(dict(doc))
            page_bytes += size
            full = len(page) >= limit
        return page, total

    def __len__(self) -> int:
        return len(self._traces)

    # -- writing ------------------------------------------------------------------------------------

    def record(self, trace_id: str, update: Mapping[str, Any]) -> None:
        """Merge one record (from the topic, or this gateway's own `pending` record)."""
        with self._lock:
            self._merge(trace_id, update)

    def _merge(self, trace_id: str, update: Mapping[str, Any]) -> None:
        # Raw records that arrived earlier merge first: the merge is order-dependent. Lock held.
        current = self._resolve(trace_id)
        old = self._traces.pop(trace_id, None)
        if old is not None:
            self._bytes -= old[2]
        merged = merge_trace(current, update)
        merged.setdefault("id", trace_id)
        size = _size(merged)
        self._traces[trace_id] = [merged, None, size]
        self._bytes += size
        self._evict()

    def _evict(self) -> None:
        while self._traces and (len(self._traces) > self.capacity or self._bytes > self.max_bytes):
            _, entry = self._traces.popitem(last=False)
            self._bytes -= entry[2]

    def _resolve(self, trace_id: str) -> dict[str, Any] | None:
        """Parse and merge the raw records of `trace_id`; its merged doc (None: unknown). Lock held."""
        entry = self._traces.get(trace_id)
        if entry is None:
            return None
        raws: builtins.list[bytes] | None = entry[1]
        if raws is None:
            return entry[0]  # type: ignore[no-any-return]
        entry[1] = None
        merged: dict[str, Any] | None = entry[0]
        for raw in raws:
            doc = _parse(raw)
            if doc is None:
                continue
            doc_id = doc.get("id") or doc.get("trace_id")
            if doc_id != trace_id:
                # Only possible for odd JSON (a repeated "id"): file it where an eager parse would have.
                if isinstance(doc_id, str) and doc_id:
                    entry[0] = merged
                    self._merge(doc_id, doc)
                continue
            merged = merge_trace(merged, doc)
            merged.setdefault("id", trace_id)
        if merged is None:
            # Nothing valid arrived for this id: as if never seen.
            if self._traces.get(trace_id) is entry:
                del self._traces[trace_id]
                self._bytes -= entry[2]
            return None
        entry[0] = merged
        size = _size(merged)
        if self._traces.get(trace_id) is entry:  # not evicted meanwhile (a foreign record's merge)
            self._bytes += size - entry[2]
        entry[2] = size
        return merged

    # -- tailing ------------------------------------------------------------------------------------

    async def start(self) -> None:
        """Assign every partition of the traces topic a window behind its end and start tailing."""
        assignments = await asyncio.to_thread(self._assignments)
        client_id = f"quasar-gateway-traces-{self.settings.instance_id}"
        # Trace polls are not on the request path: a longer fetch wait means far fewer fetch requests
        # for the broker (on Tansu a fetch is answered only when the wait expires).
        consumer = Consumer(
            reader_config(self.settings, client_id=client_id, **{"fetch.wait.max.ms": self.fetch_wait_ms})
        )
        consumer.assign(assignments)
        self._running = True
        self._thread = threading.Thread(target=self._run, args=(consumer,), name="quasar-gw-traces", daemon=True)
        self._thread.start()

    def _assignments(self) -> builtins.list[TopicPartition]:
        partitions = topic_partitions(create_admin(self.settings)).get(self.topic, 0)
        if not partitions:
            self.last_error = f"topic {self.topic} does not exist"
            return []
        window = max(1, self.capacity // partitions)
        probe = Consumer(reader_config(self.settings))
        try:
            out = []
            for p in range(partitions):
                low, high = probe.get_watermark_offsets(TopicPartition(self.topic, p), timeout=5.0)
                out.append(TopicPartition(self.topic, p, max(low, high - window)))
            return out
        finally:
            probe.close()

    async def stop(self) -> None:
        self._running = False
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 5.0)
            self._thread = None

    def _run(self, consumer: Consumer) -> None:
        try:
            while self._running:
                try:
                    messages = poll_batch(consumer, 0.2)
                except KafkaException as exc:
                    self.last_error = str(exc)
                    continue
                for msg in messages:
                    err = msg.error()
                    if err is not None:
                        if err.code() != KafkaError._PARTITION_EOF:
                            self.last_error = err.str()
                        continue
                    self._ingest(msg.key(), msg.value())
        finally:
            with contextlib.suppress(KafkaException, RuntimeError):
                consumer.close()

    def _ingest(self, key: bytes | None, value: bytes | None) -> None:
        if not value or (key is not None and key.startswith(b"__marker__/")):
            return
        trace_id = _raw_id(key, value)
        if trace_id is not None:
            # Fast path: keep the bytes, parse only if someone reads this trace.
            with self._lock:
                entry = self._traces.get(trace_id)
                if entry is None:
                    self._traces[trace_id] = [None, [value], len(value)]
                else:
                    self._traces.move_to_end(trace_id)
                    if entry[1] is None:
                        entry[1] = [value]
                    else:
                        entry[1].append(value)
                    entry[2] += len(value)
                self._bytes += len(value)
                self._evict()
            return
        doc = _parse(value)
        if doc is None:
            return
        trace_id = doc.get("id") or doc.get("trace_id") or (key.decode(errors="replace") if key else None)
        if not isinstance(trace_id, str) or not trace_id:
            return
        self.record(trace_id, doc)


def _size(doc: Mapping[str, Any]) -> int:
    return len(orjson.dumps(doc, default=str))


def _merge_raws(trace_id: str, merged: dict[str, Any] | None, raws: builtins.list[bytes]) -> dict[str, Any] | None:
    """`merged` with `raws` merged on top, in order, without touching the index (listing's view)."""
    for raw in raws:
        doc = _parse(raw)
        if doc is None or (doc.get("id") or doc.get("trace_id")) != trace_id:
            continue  # a foreign id is filed under its own id when the trace is read
        merged = merge_trace(merged, doc)
        merged.setdefault("id", trace_id)
    return merged


def _parse(value: bytes) -> dict[str, Any] | None:
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _raw_id(key: bytes | None, value: bytes) -> str | None:
    """The key, if `value` visibly starts with `{"id":"<key>"` (so its id is the key), else None.

    Keys with `"` or `\\` would be escaped in the JSON, and undecodable keys cannot equal an id: those
    take the parsing path.
    """
    if not key or b'"' in key or b"\\" in key:
        return None
    if not value.startswith(b'{"id":"') or value[7 : 7 + len(key)] != key or value[7 + len(key) : 8 + len(key)] != b'"':
        return None
    try:
        return key.decode()
    except UnicodeDecodeError:
        return None
