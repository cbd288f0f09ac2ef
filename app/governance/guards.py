"""`Governance`: the gateway's channel guards: rate limit, dedup, response cache, API keys, rollout keys.

It is a `ChannelGuards` (the gateway's one guard seam, `app/gateway/data.py`): `authenticate` checks the
channel's API key (401) before anything else looks at the request (so `validation_logic` answers cannot
be probed without a key); after the built-in CORS and `validation_logic` checks, `check` runs, in order:
rate limit (429 + Retry-After), deduplication (409, or the original response), response cache (a hit
answers 200 at once, sync only). `complete` runs when the worker's answer is back: it stores cacheable
bodies and the original response of an idempotency key; `abandon` frees an idempotency key whose request
was refused before it could run (503), so the retry is not a 409. `rollout_key` gives the sticky key the
gateway puts in the `quasar-rollout-key` header.

Idempotency keys and cached responses belong to one caller (`caller_identity`: the channel API key it
presented, else its `Authorization` header, else its address): another caller with the same key or the
same request body never gets them. The cache key also covers the route parameters and the query.

State lives in a `Store`: Redis when `redis_url` is set (shared by every instance), else memory. When the
store is unreachable a channel with `failure_mode: fail_closed` answers 503; every other channel goes on
without that feature (fail open); both count `quasar_governance_degraded_total` and `/health` says degraded.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any

import orjson
from starlette.responses import Response

from app.errors import Conflict, RateLimited, ServiceUnavailable, Unauthorized
from app.gateway.data import ChannelGuards, DataContext, Guard
from app.gateway.errors import error_response
from app.governance import metrics as M
from app.governance.auth import extract_key, key_matches
from app.governance.policy import GovernancePolicy, evaluate_key, policy_for
from app.governance.store import Store, StoreUnavailable, open_store, retry_after_header
from app.settings import Settings

__all__ = ["Governance", "cache_key", "caller_identity", "request_context"]

log = logging.getLogger("quasar.governance")

_PENDING = b"P"  # dedup marker: the first request with this key is still running
_ORIGINAL = b"R"  # dedup value: b"R" + 3-digit status + body of the first request's answer
_MAX_KEY = 200


def request_context(ctx: DataContext) -> dict[str, Any]:
    """What `key_logic` / `rollout_key` rules see: Orion's `{client_ip, channel, headers}` + the request."""
    meta = ctx.metadata
    return {
        "client_ip": ctx.client_ip,
        "channel": ctx.channel.name,
        "headers": ctx.headers,
        "data": ctx.data,
        "metadata": meta,
        "query": meta.get("query", {}),
        "params": meta.get("params", {}),
    }


def _digest(value: Any) -> str:
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def cache_key(fields: tuple[str, ...] | None, data: Any, params: Any, query: Any = None, caller: str = "") -> str:
    """Digest of the whole `data`, or of the listed top-level fields (missing = null), plus route params,
    query and the caller's identity."""
    if fields is not None:
        src = data if isinstance(data, dict) else {}
        data = [src.get(f) for f in fields]
    return _digest([data, params or {}, query or {}, caller])


def caller_identity(ctx: DataContext, policy: GovernancePolicy) -> str:
    """Who is calling, as far as the gateway can tell: a digest of the channel API key presented (the
    caller is authenticated by then), else of the `Authorization` header, else the client address."""
    if policy.api_keys:
        presented = extract_key(ctx.headers, policy.api_key_header) or extract_key(ctx.headers, "authorization")
        if presented:
            return "k:" + _digest(presented)
    authorization = ctx.headers.get("authorization")
    if authorization:
        return "a:" + _digest(authorization)
    return "ip:" + ctx.client_ip


def _safe(key: str) -> str:
    # Client-chosen keys are bounded: a long one is replaced by its digest.
    return key if len(key) <= _MAX_KEY else "h:" + _digest(key)


def _cacheable(body: bytes) -> bool:
    """Only successful bodies without errors are cached (later Orion: bodies with errors are not)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(parsed, dict) and "error" not in parsed and not parsed.get("errors")


class Governance(ChannelGuards):
    """Channel guards with shared state. `await start()` in the app's lifespan, `await stop()` after."""

    def __init__(self, settings: Settings, *, store: Store | None = None, hooks: list[Guard] | None = None) -> None:
        super().__init__([self._guard, *(hooks or [])])
        self.store = store if store is not None else open_store(settings.redis_url)
        self.prefix = f"{settings.topic_prefix}gov:"

    async def start(self) -> None:
        await self.store.start()

    async def stop(self) -> None:
        await self.store.aclose()

    def health(self) -> str:
        """`ok`, or `degraded (<reason>)` while the shared store is unreachable."""
        if self.store.degraded:
            return f"degraded ({self.store.backend} unreachable: {self.store.last_error})"
        return "ok"

    # -- programmatic API (also for the Kafka-ingest path) ------------------------------------------
    async def acquire(self, channel: str, key: str, rate: float, burst: int) -> tuple[bool, float]:
        """One token of `channel`'s bucket for `key`: `(allowed, retry_after_seconds)`.

        Raises `StoreUnavailable` when the shared store is down (the caller applies the channel's
        failure mode). A Kafka consumer pauses the partition for `retry_after` instead of dropping.
        """
        return await self.store.take(f"{self.prefix}rl:{channel}:{_safe(key)}", rate, burst)

    # -- the request path ---------------------------------------------------------------------------
    def _degraded(self, policy: GovernancePolicy, feature: str, exc: StoreUnavailable) -> None:
        """Fail closed (503) or count the decision and go on without the feature (fail open)."""
        mode = "fail_closed" if policy.fail_closed else "fail_open"
        M.DEGRADED.labels(policy.channel, feature, mode).inc()
        if policy.fail_closed:
            raise ServiceUnavailable(
                f"Channel '{policy.channel}' is unavailable: its {feature} state store is unreachable"
            ) from exc

    async def authenticate(self, ctx: DataContext) -> None:
        """The channel's API key (401), before any other check sees the request."""
        policy = policy_for(ctx.channel)
        if policy.api_keys:
            presented = extract_key(ctx.headers, policy.api_key_header) or extract_key(ctx.headers, "authorization")
            if not key_matches(presented, policy.api_keys):
                M.UNAUTHORIZED.labels(policy.channel).inc()
                raise Unauthorized(f"Missing or invalid API key for channel '{policy.channel}'")

    async def _guard(self, ctx: DataContext) -> Response | None:
        policy = policy_for(ctx.channel)
        if not policy.active:
            return None
        channel = policy.channel
        rule_ctx: dict[str, Any] | None = None

        limit = policy.rate_limit
        if limit is not None:
            client = ctx.client_ip
            if limit.key_logic is not None:
                rule_ctx = request_context(ctx)
                client = evaluate_key(limit.key_logic, rule_ctx, ctx.client_ip) or ctx.client_ip
            try:
                allowed, retry = await self.acquire(channel, client, limit.rate, limit.burst)
            except StoreUnavailable as exc:
                self._degraded(policy, "rate_limit", exc)
                allowed, retry = True, 0.0
            if not allowed:
                M.RATE_LIMITED.labels(channel).inc()
                return error_response(RateLimited("Too many requests"), {"retry-after": retry_after_header(retry)})

        dedup_key: str | None = None
        dedup = policy.dedup
        if dedup is not None:
            raw: str | None
            if dedup.key_logic is not None:
                rule_ctx = rule_ctx or request_context(ctx)
                raw = evaluate_key(dedup.key_logic, rule_ctx, None)
                raw = None if raw in ("null", "") else raw
            else:
                raw = ctx.headers.get(dedup.header) or None
            if raw is not None:
                # Scoped per channel (Orion quirk 16: its keys were global) and per caller.
                key = self._dedup_key(policy, ctx, raw)
                try:
                    previous = await self.store.claim(key, _PENDING, dedup.window_ms)
                except StoreUnavailable as exc:
                    self._degraded(policy, "deduplication", exc)
                    previous = None
                else:
                    if previous is None:
                        dedup_key = key
                        ctx.dedup_claim = key
                if previous is not None:
                    if dedup.return_original and previous[:1] == _ORIGINAL and len(previous) >= 4:
                        M.DUPLICATES.labels(channel, "replayed").inc()
                        return Response(
                            previous[4:],
                            status_code=int(previous[1:4]),
                            media_type="application/json",
                            headers={"idempotent-replayed": "true"},
                        )
                    M.DUPLICATES.labels(channel, "rejected").inc()
                    raise Conflict(
                        f"Duplicate request: idempotency key '{raw}' was already used on channel "
                        f"'{channel}' within {dedup.window_ms // 1000}s"
                    )

        cache = policy.cache
        if cache is not None and not ctx.is_async:
            key = self._cache_key(policy, cache.fields, ctx)
            try:
                body = await self.store.get(key)
            except StoreUnavailable as exc:
                self._degraded(policy, "cache", exc)
                body = None
            if body is not None:
                M.CACHE_HITS.labels(channel).inc()
                if dedup_key is not None and dedup is not None and dedup.return_original:
                    await self._remember(policy, dedup_key, 200, body)
                return Response(body, status_code=200, media_type="application/json", headers={"x-cache": "hit"})
            M.CACHE_MISSES.labels(channel).inc()
        return None

    def _cache_key(self, policy: GovernancePolicy, fields: tuple[str, ...] | None, ctx: DataContext) -> str:
        meta = ctx.metadata
        digest = cache_key(fields, ctx.data, meta.get("params"), meta.get("query"), caller_identity(ctx, policy))
        return f"{self.prefix}rc:{policy.channel}:{digest}"

    def _dedup_key(self, policy: GovernancePolicy, ctx: DataContext, raw: str) -> str:
        return f"{self.prefix}dd:{policy.channel}:{_digest(caller_identity(ctx, policy))}:{_safe(raw)}"

    async def abandon(self, ctx: DataContext) -> None:
        """The request was refused before it ran (503): free its idempotency key for the retry."""
        key = ctx.dedup_claim
        if key is None:
            return
        ctx.dedup_claim = None
        try:
            await self.store.delete(key)
        except StoreUnavailable:
            M.DEGRADED.labels(ctx.channel.name, "deduplication", "fail_open").inc()

    async def _remember(self, policy: GovernancePolicy, key: str, status: int, body: bytes) -> None:
        try:
            await self.store.replace(key, _ORIGINAL + b"%03d" % status + body)
        except StoreUnavailable:
            M.DEGRADED.labels(policy.channel, "deduplication", "fail_open").inc()

    async def complete(self, ctx: DataContext, response: Response) -> Response:
        """After the answer: store a cacheable body and the original response of an idempotency key."""
        policy = policy_for(ctx.channel)
        if policy.cache is None and (policy.dedup is None or not policy.dedup.return_original):
            return response
        body = bytes(response.body)
        cache = policy.cache
        if cache is not None and not ctx.is_async and response.status_code == 200 and _cacheable(body):
            key = self._cache_key(policy, cache.fields, ctx)
            try:
                await self.store.put(key, body, cache.ttl_ms)
            except StoreUnavailable:
                M.DEGRADED.labels(policy.channel, "cache", "fail_open").inc()
        dedup = policy.dedup
        if dedup is not None and dedup.return_original:
            raw: str | None
            if dedup.key_logic is not None:
                raw = evaluate_key(dedup.key_logic, request_context(ctx), None)
                raw = None if raw in ("null", "") else raw
            else:
                raw = ctx.headers.get(dedup.header) or None
            if raw is not None:
                await self._remember(policy, self._dedup_key(policy, ctx, raw), response.status_code, body)
        return response

    def rollout_key(self, ctx: DataContext) -> str | None:
        """The sticky rollout key per the channel's `rollout_key` (None: the engine picks at random)."""
        rollout = policy_for(ctx.channel).rollout
        if rollout is None:
            return None
        if rollout.header is not None:
            return ctx.headers.get(rollout.header) or None
        if rollout.logic is not None:
            value = evaluate_key(rollout.logic, request_context(ctx), None)
            return None if value in (None, "null", "") else value
        # `$kafka_key` on an HTTP request: the record key the gateway writes is the trace id (random).
        return None
