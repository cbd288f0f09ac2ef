"""Governance on the worker's Kafka path: rate limit and deduplication of records produced straight to
channel topics (records that came through the gateway carry `quasar-mode` and were checked there).

- Rate limit: the same token bucket (and store keys) as the gateway. A refused record is never dropped:
  the worker pauses its partition, seeks back to that record and resumes after `retry_after`
  (`PartitionThrottle`), so consumption slows to the limit. A throttled partition holds back every key
  on it (head-of-line: partitions are Kafka's unit of order).
  Key: the channel's `key_logic` over `{data, metadata, headers, key, channel, query, params}`, else the
  Kafka key, else one bucket for the whole channel.
- Deduplication: the key comes from `key_logic` or the configured header (case-insensitive); a duplicate
  within the window is not processed again but traced with status `duplicate` and counted. The claim
  stores the record's position, so a redelivery of the *same* record (a crash before commit) runs again.
- Store unreachable: `fail_open` goes on without the feature; `fail_closed` pauses the partition and
  retries later. Both count `quasar_governance_degraded_total`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from app.governance import metrics as M
from app.governance.policy import DedupPolicy, GovernancePolicy, evaluate_key, policy_for
from app.governance.store import Store, StoreUnavailable, open_store
from app.kafka import headers as H
from app.settings import Settings

__all__ = [
    "ADMIT",
    "KafkaIngestGovernance",
    "PartitionThrottle",
    "Verdict",
    "dedup_store_key",
    "duplicate_trace",
    "rate_store_key",
    "record_context",
    "record_dedup_key",
    "record_rate_key",
]

log = logging.getLogger("quasar.governance")

_MAX_KEY = 200
CHANNEL_WIDE = "*"  # rate-limit key of a record without key_logic result and without a Kafka key


@dataclass(frozen=True, slots=True)
class Verdict:
    """What to do with one record: run it (`admit`), pause its partition (`hold`) or skip it (`duplicate`)."""

    action: str
    retry_after: float = 0.0
    dedup_key: str | None = None
    original: str | None = None  # trace id of the first record with the same dedup key, when known


ADMIT = Verdict("admit")


def _safe(key: str) -> str:
    # Same rule as the gateway (`guards._safe`): client-chosen keys are bounded by a digest.
    if len(key) <= _MAX_KEY:
        return key
    digest = hashlib.blake2b(orjson.dumps(key, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()
    return "h:" + digest


def rate_store_key(prefix: str, channel: str, key: str) -> str:
    """The bucket key; the gateway's `Governance.acquire` uses the same one (one limit for both paths)."""
    return f"{prefix}gov:rl:{channel}:{_safe(key)}"


def dedup_store_key(prefix: str, channel: str, raw: str) -> str:
    """The idempotency key's store key, shared with the gateway (a key used over HTTP is a duplicate here)."""
    return f"{prefix}gov:dd:{channel}:{_safe(raw)}"


def _text(key: bytes | str | None) -> str | None:
    if key is None or key in (b"", ""):
        return None
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else key


def record_context(
    channel: str, key: bytes | str | None, headers: Mapping[str, str], data: Any, metadata: Any
) -> dict[str, Any]:
    """What `key_logic` sees for a Kafka record: the gateway's names where they make sense, plus `key`.

    `metadata` also carries `kafka_key` and (unless the record has its own) `headers`, so a rule written
    against `metadata.headers` works on both paths; `client_ip` is null (fall back to the Kafka key).
    """
    meta = dict(metadata) if isinstance(metadata, Mapping) else {}
    text = _text(key)
    meta.setdefault("kafka_key", text)
    meta.setdefault("headers", dict(headers))
    return {
        "data": data,
        "metadata": meta,
        "headers": dict(headers),
        "key": text,
        "channel": channel,
        "client_ip": None,
        "query": meta.get("query", {}),
        "params": meta.get("params", {}),
    }


def record_rate_key(policy: GovernancePolicy, key: bytes | str | None, context: Callable[[], Any]) -> str:
    """The rate-limit client key of a record: `key_logic`, else the Kafka key, else channel-wide."""
    fallback = _text(key)
    limit = policy.rate_limit
    if limit is not None and limit.key_logic is not None:
        value = evaluate_key(limit.key_logic, context(), fallback)
        if value not in (None, "null", ""):
            return value
    return fallback or CHANNEL_WIDE


def record_dedup_key(dedup: DedupPolicy, headers: Mapping[str, str], context: Callable[[], Any]) -> str | None:
    """The idempotency key of a record (None: no dedup for it): `key_logic`, else the header."""
    if dedup.key_logic is not None:
        value = evaluate_key(dedup.key_logic, context(), None)
        return None if value in (None, "null", "") else value
    value = headers.get(dedup.header)
    if value is None:
        # Kafka header names keep the producer's case; the policy's name is lower case.
        value = next((v for k, v in headers.items() if k.lower() == dedup.header), None)
    return value or None


def duplicate_trace(
    *,
    channel: str,
    headers: Mapping[str, str],
    trace_id: str,
    created_ms: int,
    verdict: Verdict,
    where: tuple[str, int, int],
) -> tuple[str, bytes]:
    """`(key, value)` of the `quasar.traces` record of a record skipped as a duplicate.

    A resent record often carries the original's trace id: its trace then gets the record's position as
    id instead, so it never overwrites (or, compacted, replaces) the original's trace.
    """
    topic, partition, offset = where
    if trace_id == verdict.original:
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
        "dedup_key": verdict.dedup_key,
        "duplicate_of": verdict.original,
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
        with contextlib.suppress(Exception):  # closed consumer or partition revoked meanwhile
            consumer.resume([TopicPartition(tp[0], tp[1])])

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.held.clear()


class KafkaIngestGovernance:
    """The worker's governance: policies of the governed channels, the store and the throttle."""

    def __init__(self, settings: Settings, *, store: Store | None = None, closed_retry_s: float = 1.0) -> None:
        self.prefix = settings.topic_prefix
        self._redis_url = settings.redis_url
        self._store = store
        self.closed_retry_s = closed_retry_s
        self.throttle = PartitionThrottle()
        self._governed: tuple[Any, dict[str, GovernancePolicy]] = (None, {})

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self._redis_url)  # lazily: constructing does no IO
        return self._store

    async def start(self) -> None:
        await self.store.start()

    async def aclose(self) -> None:
        self.throttle.close()
        if self._store is not None:
            await self._store.aclose()

    def governed(self, snapshot: Any) -> dict[str, GovernancePolicy]:
        """Channel name -> policy for the channels of `snapshot` with a rate limit or dedup (cached)."""
        cached_for, policies = self._governed
        if cached_for is snapshot:
            return policies
        policies = {}
        for view in snapshot.channels.values():
            cfg = view.config
            if "rate_limit" not in cfg and "deduplication" not in cfg:
                continue  # no parse for the common ungoverned channel
            policy = policy_for(view)
            if policy.rate_limit is not None or policy.dedup is not None:
                policies[view.name] = policy
        self._governed = (snapshot, policies)
        return policies

    def _degraded(self, policy: GovernancePolicy, feature: str) -> Verdict | None:
        """Fail closed: hold (retry later, never drop). Fail open: None (go on without the feature)."""
        mode = "fail_closed" if policy.fail_closed else "fail_open"
        M.DEGRADED.labels(policy.channel, feature, mode).inc()
        return Verdict("hold", self.closed_retry_s) if policy.fail_closed else None

    async def admit(
        self,
        policy: GovernancePolicy,
        *,
        key: bytes | str | None,
        headers: Mapping[str, str],
        decode: Callable[[], tuple[Any, Any]],
        where: tuple[str, int, int],
        trace_id: str,
    ) -> Verdict:
        """Decide for one Kafka record. `decode` gives `(data, metadata)`; it is called only when a
        `key_logic` needs them (an undecodable record is admitted: the worker dead-letters it)."""
        context_cache: list[dict[str, Any]] = []

        def context() -> dict[str, Any]:
            if not context_cache:
                try:
                    data, metadata = decode()
                except Exception:
                    data, metadata = None, {}
                context_cache.append(record_context(policy.channel, key, headers, data, metadata))
            return context_cache[0]

        channel = policy.channel
        limit = policy.rate_limit
        if limit is not None:
            client = record_rate_key(policy, key, context)
            try:
                allowed, retry = await self.store.take(
                    rate_store_key(self.prefix, channel, client), limit.rate, limit.burst
                )
            except StoreUnavailable:
                verdict = self._degraded(policy, "rate_limit")
                if verdict is not None:
                    return verdict
                allowed, retry = True, 0.0
            if not allowed:
                M.RATE_LIMITED.labels(channel).inc()
                return Verdict("hold", retry)

        dedup = policy.dedup
        if dedup is None:
            return ADMIT
        raw = record_dedup_key(dedup, headers, context)
        if raw is None:
            return ADMIT
        topic, partition, offset = where
        mine = {"t": topic, "p": partition, "o": offset, "id": trace_id}
        try:
            previous = await self.store.claim(
                dedup_store_key(self.prefix, channel, raw), orjson.dumps(mine), dedup.window_ms
            )
        except StoreUnavailable:
            return self._degraded(policy, "deduplication") or ADMIT
        if previous is None:
            return ADMIT
        try:
            first = orjson.loads(previous)
        except orjson.JSONDecodeError:
            first = None  # claimed by the gateway (its own marker values)
        if isinstance(first, dict):
            if (first.get("t"), first.get("p"), first.get("o")) == (topic, partition, offset):
                return ADMIT  # the same record again (redelivered before its commit): run it
            original = first.get("id")
        else:
            original = None
        M.DUPLICATES.labels(channel, "skipped").inc()
        return Verdict("duplicate", dedup_key=raw, original=original if isinstance(original, str) else None)
