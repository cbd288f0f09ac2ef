"""Trace lookup for `GET /api/v1/data/traces[/{id}]`, answered by any gateway instance.

Design: every gateway tails `quasar.traces` (all partitions, assigned directly, no consumer group) into
a bounded in-memory index (LRU by last update). Kafka has no lookup by key, so answering on demand
would mean scanning the topic per request; tailing costs one orjson parse per trace record and keeps
lookups O(1). The index starts a window behind the end of each partition (watermarks are only used as
a starting hint, so Tansu's inexact end offsets cost nothing but a few extra records) and is bounded by
`capacity`: traces older than the window are not served (the topic still keeps them for other tools).

Records are merged per trace id, whatever partition they arrive on (the gateway's `pending` record and
the worker's result may be partitioned by different clients): fields are merged and the status never
moves backwards (pending < running < completed/failed).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from app.gateway.reply_router import poll_batch
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import reader_config
from app.kafka.names import TopicNames
from app.settings import Settings

__all__ = ["TRACE_STATUSES", "TraceIndex", "merge_trace"]

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


class TraceIndex:
    """Bounded, merged view of recent traces, fed by a tail of `quasar.traces`."""

    def __init__(self, settings: Settings, *, capacity: int = 20_000, fetch_wait_ms: int = 200) -> None:
        self.settings = settings
        self.fetch_wait_ms = fetch_wait_ms
        self.topic = TopicNames(settings.topic_prefix).traces
        self.capacity = capacity
        self._traces: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._running = False
        self.last_error: str | None = None

    # -- reading ------------------------------------------------------------------------------------

    def get(self, trace_id: str) -> dict[str, Any] | None:
        with self._lock:
            trace = self._traces.get(trace_id)
            return dict(trace) if trace is not None else None

    def list(
        self,
        *,
        channel: str | None = None,
        status: str | None = None,
        mode: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[dict[str, Any]], int]:
        """Newest first, filtered; returns (page, total matching)."""
        with self._lock:
            items = list(reversed(self._traces.values()))
        matching = [
            t
            for t in items
            if (channel is None or t.get("channel") == channel)
            and (status is None or t.get("status") == status)
            and (mode is None or t.get("mode") == mode)
        ]
        return [dict(t) for t in matching[offset : offset + limit]], len(matching)

    def __len__(self) -> int:
        return len(self._traces)

    # -- writing ------------------------------------------------------------------------------------

    def record(self, trace_id: str, update: Mapping[str, Any]) -> None:
        """Merge one record (from the topic, or this gateway's own `pending` record)."""
        with self._lock:
            merged = merge_trace(self._traces.pop(trace_id, None), update)
            merged.setdefault("id", trace_id)
            self._traces[trace_id] = merged
            while len(self._traces) > self.capacity:
                self._traces.popitem(last=False)

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
        self._thread = threading.Thread(
            target=self._run, args=(consumer,), name="quasar-gw-traces", daemon=True
        )
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
        try:
            doc = orjson.loads(value)
        except orjson.JSONDecodeError:
            return
        if not isinstance(doc, dict):
            return
        trace_id = doc.get("id") or doc.get("trace_id") or (key.decode(errors="replace") if key else None)
        if not isinstance(trace_id, str) or not trace_id:
            return
        self.record(trace_id, doc)
