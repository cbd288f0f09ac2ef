"""`Governor`: a channel's input guards and shared-state governance, one decision for both paths.

`decide(admission)` runs, in order: API key (deny 401), payload size (deny 413), `validation_logic`
(deny 400), rate limit (throttle), deduplication (duplicate), response cache (cached, sync only), and
returns a `Decision`; it never raises for a request it refuses. `complete` runs once the answer is
known (HTTP): it stores cacheable bodies and the first answer of an idempotency key.

State lives in a `Store` (Redis when `redis_url` is set, shared by every gateway and worker; else
memory) under one set of keys (`app.governance.keys`) and one dedup record format (`DedupClaim`), so
a key used over HTTP is a duplicate on Kafka and the other way round. When the store is unreachable a
`fail_closed` channel gets `unavailable`; every other channel goes on without that feature (fail
open); both count `quasar_governance_degraded_total` and `health()` says degraded.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson

from app.channels import GovernancePolicy
from app.engine.jsonlogic import is_truthy
from app.errors import BadRequest, Conflict, PayloadTooLarge, RateLimited, ServiceUnavailable, Unauthorized
from app.governance import metrics as M
from app.governance.credentials import extract_key, key_matches
from app.governance.decision import ADMIT, Admission, Decision, StoredResponse
from app.governance.keys import cache_digest, cache_store_key, dedup_store_key, digest, evaluate_key, rate_store_key
from app.governance.store import Store, StoreUnavailable, open_store
from app.settings import Settings

__all__ = ["CHANNEL_WIDE", "DedupClaim", "Governor", "rollout_key"]

log = logging.getLogger("quasar.governance")

CHANNEL_WIDE = "*"  # rate-limit key of a record without key_logic result, client or Kafka key


@dataclass(frozen=True, slots=True)
class DedupClaim:
    """The one dedup record format: who claimed an idempotency key, and (HTTP) its first answer.

    Stored as JSON `{"trace_id", "where": [topic, partition, offset] | null, "status"?, "body"?}`.
    """

    trace_id: str | None
    where: tuple[str, int, int] | None = None
    response: StoredResponse | None = None

    def encode(self) -> bytes:
        doc: dict[str, Any] = {"trace_id": self.trace_id, "where": list(self.where) if self.where else None}
        if self.response is not None:
            doc["status"] = self.response.status
            doc["body"] = self.response.body.decode("utf-8", "replace")
        return orjson.dumps(doc)

    @classmethod
    def decode(cls, raw: bytes) -> DedupClaim:
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return cls(None)
        if not isinstance(doc, dict):
            return cls(None)
        where = doc.get("where")
        trace_id = doc.get("trace_id")
        status, body = doc.get("status"), doc.get("body")
        return cls(
            trace_id if isinstance(trace_id, str) else None,
            (str(where[0]), int(where[1]), int(where[2]))
            if isinstance(where, list) and len(where) == 3 and all(type(x) is int for x in where[1:])
            else None,
            StoredResponse(status, body.encode()) if type(status) is int and isinstance(body, str) else None,
        )

    def same_request(self, adm: Admission) -> bool:
        """The claim is this very record, redelivered before its commit (a crash): it runs again."""
        return self.where is not None and self.where == adm.where


def _cacheable(body: bytes) -> bool:
    """Only successful bodies without errors are cached (later Orion: bodies with errors are not)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and "error" not in parsed and not parsed.get("errors")


class Governor:
    """Decides for requests and records of every channel. `await start()` before use, `await stop()` after."""

    def __init__(self, settings: Settings, *, store: Store | None = None, closed_retry_s: float = 1.0) -> None:
        self.prefix = settings.topic_prefix
        self._redis_url = settings.redis_url
        self._store = store
        self.closed_retry_s = closed_retry_s

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self._redis_url)  # lazily: constructing does no IO
        return self._store

    async def start(self) -> None:
        await self.store.start()

    async def stop(self) -> None:
        if self._store is not None:
            await self._store.aclose()

    def health(self) -> str:
        """`ok`, or `degraded (<reason>)` while the shared store is unreachable."""
        if self._store is not None and self._store.degraded:
            return f"degraded ({self._store.backend} unreachable: {self._store.last_error})"
        return "ok"

    def _degraded(self, policy: GovernancePolicy, feature: str) -> Decision | None:
        """Fail closed: `unavailable`. Fail open: None (go on without the feature). Both are counted."""
        mode = "fail_closed" if policy.fail_closed else "fail_open"
        M.DEGRADED.labels(policy.channel, feature, mode).inc()
        if not policy.fail_closed:
            return None
        return Decision(
            "unavailable",
            ServiceUnavailable(f"Channel '{policy.channel}' is unavailable: its {feature} state store is unreachable"),
            retry_after=self.closed_retry_s,
        )

    # -- the checks --------------------------------------------------------------------------------
    @staticmethod
    def authenticate(adm: Admission) -> Decision | None:
        """The channel's API key (deny 401), before anything else looks at the request; None: passed."""
        ch = adm.channel
        guards = ch.guards
        if guards.api_keys:
            presented = extract_key(adm.headers, guards.api_key_header) or extract_key(adm.headers, "authorization")
            if not key_matches(presented, guards.api_keys):
                M.UNAUTHORIZED.labels(ch.name).inc()
                return Decision("deny", Unauthorized(f"Missing or invalid API key for channel '{ch.name}'"))
        return None

    @classmethod
    def check_guards(cls, adm: Admission, *, authenticated: bool = False, validate: bool = True) -> Decision | None:
        """API key, payload size and `validation_logic` (no store needed); None when all pass.
        `validate=False`: the caller applies `validation_logic` itself (the worker does, after decoding)."""
        if not authenticated:
            denied = cls.authenticate(adm)
            if denied is not None:
                return denied
        ch = adm.channel
        guards = ch.guards
        limit = guards.max_payload_bytes
        if limit is not None and adm.size is not None and adm.size > limit:
            return Decision(
                "deny", PayloadTooLarge(f"Payload of {adm.size} bytes exceeds channel '{ch.name}' limit of {limit}")
            )
        if validate and guards.validation is not None:
            try:
                ok = is_truthy(guards.validation.evaluate(adm.context()))
            except Exception as exc:
                return Decision("deny", BadRequest(f"Input validation error: {exc}"))
            if not ok:
                return Decision("deny", BadRequest("Input validation failed"))
        return None

    def rate_key(self, adm: Admission) -> str:
        """The rate-limit client key: `key_logic`, else the client IP (HTTP) or Kafka key, else channel-wide."""
        fallback = adm.client or adm.key
        limit = adm.channel.governance.rate_limit
        if limit is not None and limit.key_logic is not None:
            value = evaluate_key(limit.key_logic, adm.context(), fallback)
            if value not in (None, "null", ""):
                return value
        return fallback or CHANNEL_WIDE

    @staticmethod
    def caller_identity(adm: Admission) -> str:
        """Who is calling, as far as governance can tell: a digest of the channel API key presented (the
        caller is authenticated by then), else of the `Authorization` header, else the client address.
        A Kafka record has no caller of its own: every record of a channel shares one identity."""
        guards = adm.channel.guards
        if guards.api_keys:
            presented = extract_key(adm.headers, guards.api_key_header) or extract_key(adm.headers, "authorization")
            if presented:
                return "k:" + digest(presented)
        authorization = adm.headers.get("authorization")
        if authorization:
            return "a:" + digest(authorization)
        return f"ip:{adm.client}" if adm.client is not None else "kafka"

    def _dedup_key(self, adm: Admission, raw: str) -> str:
        return dedup_store_key(self.prefix, adm.channel.name, self.caller_identity(adm), raw)

    @staticmethod
    def idempotency_key(adm: Admission) -> str | None:
        """The caller's idempotency key (None: no dedup for it): `key_logic`, else the configured header."""
        dedup = adm.channel.governance.dedup
        if dedup is None:
            return None
        if dedup.key_logic is not None:
            value = evaluate_key(dedup.key_logic, adm.context(), None)
            return None if value in (None, "null", "") else value
        value = adm.headers.get(dedup.header)
        if value is None:
            # Kafka header names keep the producer's case; the policy's name is lower case.
            value = next((v for k, v in adm.headers.items() if k.lower() == dedup.header), None)
        return value or None

    async def decide(self, adm: Admission, *, authenticated: bool = False, validate: bool = True) -> Decision:
        """The decision for one request or record (see the module doc for the order of checks);
        `authenticated`: the caller already passed `authenticate`; `validate`: see `check_guards`."""
        denied = self.check_guards(adm, authenticated=authenticated, validate=validate)
        if denied is not None:
            return denied
        policy = adm.channel.governance
        if not policy.active:
            return ADMIT
        channel = policy.channel

        limit = policy.rate_limit
        if limit is not None:
            try:
                allowed, retry = await self.store.take(
                    rate_store_key(self.prefix, channel, self.rate_key(adm)), limit.rate, limit.burst
                )
            except StoreUnavailable:
                degraded = self._degraded(policy, "rate_limit")
                if degraded is not None:
                    return degraded
                allowed, retry = True, 0.0
            if not allowed:
                M.RATE_LIMITED.labels(channel).inc()
                return Decision("throttle", RateLimited("Too many requests"), retry_after=retry)

        claimed: str | None = None
        dedup = policy.dedup
        raw = self.idempotency_key(adm) if dedup is not None else None
        if dedup is not None and raw is not None:
            mine = DedupClaim(adm.trace_id, adm.where)
            try:
                previous = await self.store.claim(self._dedup_key(adm, raw), mine.encode(), dedup.window_ms)
            except StoreUnavailable:
                degraded = self._degraded(policy, "deduplication")
                if degraded is not None:
                    return degraded
                previous = None
            else:
                claimed = raw if previous is None else None
            if previous is not None:
                first = DedupClaim.decode(previous)
                if first.same_request(adm):
                    claimed = raw
                else:
                    replay = first.response if dedup.return_original else None
                    M.DUPLICATES.labels(channel, "replayed" if replay else "rejected").inc()
                    return Decision(
                        "duplicate",
                        Conflict(
                            f"Duplicate request: idempotency key '{raw}' was already used on channel "
                            f"'{channel}' within {dedup.window_ms // 1000}s"
                        ),
                        dedup_key=raw,
                        original=first.trace_id,
                        response=replay,
                    )

        cache = policy.cache
        if cache is not None and adm.sync:
            try:
                body = await self.store.get(self._cache_key(adm))
            except StoreUnavailable:
                degraded = self._degraded(policy, "cache")
                if degraded is not None:
                    return degraded
                body = None
            if body is not None:
                M.CACHE_HITS.labels(channel).inc()
                hit = StoredResponse(200, body)
                if claimed is not None and dedup is not None and dedup.return_original:
                    await self._remember(adm, claimed, hit)
                return Decision("cached", response=hit, dedup_key=claimed)
            M.CACHE_MISSES.labels(channel).inc()
        return Decision("admit", dedup_key=claimed) if claimed is not None else ADMIT

    def _cache_key(self, adm: Admission) -> str:
        cache = adm.channel.governance.cache
        meta = adm.metadata or {}
        fields = cache.fields if cache else None
        key = cache_digest(fields, adm.data, meta.get("params"), meta.get("query"), self.caller_identity(adm))
        return cache_store_key(self.prefix, adm.channel.name, key)

    async def _remember(self, adm: Admission, raw: str, response: StoredResponse) -> None:
        policy = adm.channel.governance
        claim = DedupClaim(adm.trace_id, adm.where, response)
        try:
            await self.store.replace(self._dedup_key(adm, raw), claim.encode())
        except StoreUnavailable:
            M.DEGRADED.labels(policy.channel, "deduplication", "fail_open").inc()

    async def abandon(self, adm: Admission, decision: Decision) -> None:
        """The admitted request was refused before it ran (503): free its idempotency key for the retry."""
        if decision.dedup_key is None:
            return
        try:
            await self.store.delete(self._dedup_key(adm, decision.dedup_key))
        except StoreUnavailable:
            M.DEGRADED.labels(adm.channel.name, "deduplication", "fail_open").inc()

    async def complete(self, adm: Admission, decision: Decision, response: StoredResponse) -> None:
        """After an admitted request's answer: keep a cacheable body, and the first answer of its
        idempotency key when the channel returns originals."""
        policy = adm.channel.governance
        cache = policy.cache
        if cache is not None and adm.sync and response.status == 200 and _cacheable(response.body):
            try:
                await self.store.put(self._cache_key(adm), response.body, cache.ttl_ms)
            except StoreUnavailable:
                M.DEGRADED.labels(policy.channel, "cache", "fail_open").inc()
        dedup = policy.dedup
        if dedup is not None and dedup.return_original and decision.dedup_key is not None:
            await self._remember(adm, decision.dedup_key, response)


def rollout_key(adm: Admission) -> str | None:
    """The sticky rollout key per the channel's `rollout_key`: a header, the Kafka key, or a JSONLogic
    rule's result (None: the engine picks a bucket at random)."""
    rollout = adm.channel.rollout
    if rollout is None:
        return None
    if rollout.header is not None:
        value = adm.headers.get(rollout.header)
        if value is None:
            value = next((v for k, v in adm.headers.items() if k.lower() == rollout.header), None)
        return value or None
    if rollout.kafka_key:
        return adm.key or None  # an HTTP request's record key is its trace id: random, so no key
    if rollout.logic is not None:
        value = evaluate_key(rollout.logic, adm.context(), None)
        return None if value in (None, "null", "") else value
    return None
