"""Governance on the worker's Kafka path: the channel's input guards, rate limit and deduplication of
records produced straight to channel topics, through the same `Governor` (and store keys) as the gateway.

The worker acts on the `Decision`:
- `deny` (API key, payload size): the record is dead-lettered with the reason (`validation_logic` is applied
  by the record pipeline to every record, once decoded).
- `throttle` / `unavailable` (rate limit; fail-closed store outage): never dropped: the worker pauses the
  partition, seeks back to that record and resumes after `retry_after` (`PartitionThrottle`), so
  consumption slows to the limit. A throttled partition holds back every key on it (head-of-line:
  partitions are Kafka's unit of order). Rate-limit key: `key_logic`, else the Kafka key, else one
  bucket for the whole channel.
- `duplicate`: not processed again but traced with status `duplicate` and counted. The claim stores the
  record's position, so a redelivery of the *same* record (a crash before commit) runs again.
Store unreachable and `fail_open`: the feature is skipped. Both modes count `quasar_governance_degraded_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from app.channels import CompiledChannel
from app.governance.decision import Admission, Decision
from app.governance.governor import Governor
from app.governance.store import Store
from app.kafka import headers as H
from app.settings import Settings

__all__ = ["KafkaIngestGovernance", "PartitionThrottle", "duplicate_trace"]

log = logging.getLogger("quasar.governance")


def _text(key: bytes | str | None) -> str | None:
    if key is None or key in (b"", ""):
        return None
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else key


def duplicate_trace(
    *,
    channel: str,
    headers: Mapping[str, str],
    trace_id: str,
    created_ms: int,
    decision: Decision,
    where: tuple[str, int, int],
) -> tuple[str, bytes]:
    """`(key, value)` of the `quasar.traces` record of a record skipped as a duplicate.

    A resent record often carries the original's trace id: its trace then gets the record's position as
    id instead, so it never overwrites (or, compacted, replaces) the original's trace.
    """
    topic, partition, offset = where
    if trace_id == decision.original:
        trace_id = f"{topic}-{partition}-{offset}"
    done_ms = time.time_ns() // 1_000_000
    created = created_ms if created_ms > 0 else done_ms
    doc: dict[str, Any] = {
        "id": trace_id,
        "status": "duplicate",
        "mode": headers.get(H.MODE) or ("sync" if H.REPLY_TO in headers else "async"),
        "channel": channel,
        "created_at": _iso(created),
        "completed_at": _iso(done_ms),
        "duration_ms": max(0, done_ms - created),
        "dedup_key": decision.dedup_key,
        "duplicate_of": decision.original,
        "record": {"topic": topic, "partition": partition, "offset": offset},
    }
    return trace_id, orjson.dumps(doc)


def _iso(ms: int) -> str:
    secs, rem = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{rem:03d}Z"


class PartitionThrottle:
    """Partitions paused by the rate limit (or a fail-closed store), each resumed by a loop timer.

    `hold` pauses the partition and seeks it back to the first record not run, so nothing is lost:
    the records after it in the current batch are skipped (not committed) and fetched again on resume.
    Call on the event loop thread only.
    """

    def __init__(self) -> None:
        self.held: dict[tuple[str, int], int] = {}  # (topic, partition) -> offset to re-read from
        self._timers: dict[tuple[str, int], asyncio.TimerHandle] = {}
        self.pauses = 0  # holds started (tests, bench)
        # Partitions paused for another reason (a paused channel): a hold ending leaves them paused.
        self.keep_paused: Callable[[tuple[str, int]], bool] = lambda _tp: False

    def hold(self, consumer: Consumer, topic: str, partition: int, offset: int, delay: float | None = None) -> None:
        """Pause `topic[partition]` and make `offset` (or an earlier held one) its next record.

        With `delay`, schedule the resume unless one is already scheduled; without it (a record of an
        already held partition showed up), only re-pause and re-seek.
        """
        tp = (topic, partition)
        start = min(offset, self.held.get(tp, offset))
        self.held[tp] = start
        target = TopicPartition(topic, partition, start)
        try:
            consumer.pause([target])
            consumer.seek(target)
        except Exception as exc:
            # Not assigned any more (rebalance): the new owner starts from the last commit, which is
            # at or before `start` (nothing after it was committed): nothing is lost.
            log.warning("cannot pause %s[%d] at %d: %s", topic, partition, start, exc)
        if delay is not None and tp not in self._timers:
            self.pauses += 1
            loop = asyncio.get_running_loop()
            self._timers[tp] = loop.call_later(max(0.0, delay), self._resume, consumer, tp)

    def _resume(self, consumer: Consumer, tp: tuple[str, int]) -> None:
        self._timers.pop(tp, None)
        self.held.pop(tp, None)
        if self.keep_paused(tp):
            return
        with contextlib.suppress(Exception):  # closed consumer or partition revoked meanwhile
            consumer.resume([TopicPartition(tp[0], tp[1])])

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.held.clear()


class KafkaIngestGovernance:
    """The worker's governance: the `Governor`, the channels it applies to, and the partition throttle."""

    def __init__(self, settings: Settings, *, store: Store | None = None, closed_retry_s: float = 1.0) -> None:
        self.governor = Governor(settings, store=store, closed_retry_s=closed_retry_s)
        self.throttle = PartitionThrottle()
        self._governed: tuple[Any, dict[str, CompiledChannel]] = (None, {})

    @property
    def store(self) -> Store:
        return self.governor.store

    async def start(self) -> None:
        await self.governor.start()

    async def aclose(self) -> None:
        self.throttle.close()
        await self.governor.stop()

    def governed(self, snapshot: Any) -> dict[str, CompiledChannel]:
        """Channel name -> compiled channel, for the channels of `snapshot` with anything to check on a
        record before it runs: API keys, payload limit, rate limit or dedup (cached per snapshot). The record
        pipeline applies `validation_logic` to every record itself, once it is decoded."""
        cached_for, channels = self._governed
        if cached_for is snapshot:
            return channels
        channels = {}
        for view in snapshot.channels.values():
            ch = view.channel
            guards, policy = ch.guards, ch.governance
            if guards.api_keys or guards.max_payload_bytes or policy.rate_limit or policy.dedup:
                channels[view.name] = ch
        self._governed = (snapshot, channels)
        return channels

    async def admit(
        self,
        channel: CompiledChannel,
        *,
        key: bytes | str | None,
        headers: Mapping[str, str],
        decode: Callable[[], tuple[Any, Any]],
        where: tuple[str, int, int],
        trace_id: str,
        size: int | None = None,
    ) -> Decision:
        """Decide for one Kafka record. `decode` gives `(data, metadata)`; it is called only when a rule
        needs them (an undecodable record is seen as empty: the worker dead-letters it later anyway)."""
        lowered = {k.lower(): v for k, v in headers.items()}
        admission = Admission(channel, lowered, trace_id, key=_text(key), where=where, size=size, decode=decode)
        return await self.governor.decide(admission, validate=False)  # the pipeline validates every record
