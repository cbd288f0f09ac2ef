"""A channel's governance config, parsed and compiled once per config version (never per request).

Keys (channel `config`, names and defaults as Orion, `orion-semantics.md` §1d, plus Quasar's additions):

- `rate_limit: {requests_per_second, burst? (rps/2+1), key_logic?}`
- `deduplication: {header? ("Idempotency-Key"), key_logic?, window_secs? | retention_secs? (300),
  return_original? (false)}`
- `cache: {enabled, ttl_secs? (300), cache_key_fields?}` (`"data.x"` and `"x"` both name top-level field x)
- `failure_mode: "fail_open" (default) | "fail_closed"`: what to do when the shared store is unreachable
- `api_keys: ["k1", "env://VAR"]`, `api_key_header? ("X-API-Key"; `Authorization: Bearer k` always works)`
- `rollout_key`: a header name (`"X-User-Id"`), `"$kafka_key"` / `{"kafka_key": true}`, `{"header": name}`
  or a JSONLogic expression over `{data, metadata, headers, query, params, client_ip, channel, key}`
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from app.engine.jsonlogic import Logic, compile_logic

__all__ = [
    "CachePolicy",
    "DedupPolicy",
    "GovernancePolicy",
    "RateLimitPolicy",
    "RolloutKey",
    "build_policy",
    "evaluate_key",
    "policy_for",
]

log = logging.getLogger("quasar.governance")

FAIL_OPEN, FAIL_CLOSED = "fail_open", "fail_closed"
KAFKA_KEY = "$kafka_key"


@dataclass(frozen=True, slots=True)
class RateLimitPolicy:
    rate: float
    burst: int
    key_logic: Logic | None = None


@dataclass(frozen=True, slots=True)
class DedupPolicy:
    header: str = "idempotency-key"  # lower case: request headers are lower-cased by the gateway
    window_ms: int = 300_000
    key_logic: Logic | None = None
    return_original: bool = False


@dataclass(frozen=True, slots=True)
class CachePolicy:
    ttl_ms: int = 300_000
    fields: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class RolloutKey:
    """Where a request's sticky rollout key comes from: one of header, Kafka key, or logic."""

    header: str | None = None
    kafka_key: bool = False
    logic: Logic | None = None


@dataclass(frozen=True, slots=True)
class GovernancePolicy:
    channel: str
    rate_limit: RateLimitPolicy | None = None
    dedup: DedupPolicy | None = None
    cache: CachePolicy | None = None
    fail_closed: bool = False
    api_keys: tuple[str, ...] = ()
    api_key_header: str = "x-api-key"
    rollout: RolloutKey | None = None
    problems: tuple[str, ...] = field(default=())

    @property
    def active(self) -> bool:
        """Anything to do on the request path at all (the common no-governance channel costs nothing)."""
        return bool(self.rate_limit or self.dedup or self.cache or self.api_keys or self.fail_closed)


def _positive_int(value: Any, default: int) -> int:
    return value if type(value) is int and value > 0 else default


def _compile(rule: Any, where: str, problems: list[str]) -> Logic | None:
    if rule is None:
        return None
    try:
        return compile_logic(rule)
    except Exception as exc:
        problems.append(f"{where}: {exc}")
        return None


def _rate_limit(cfg: Any, problems: list[str]) -> RateLimitPolicy | None:
    if not isinstance(cfg, Mapping):
        return None
    rps = cfg.get("requests_per_second")
    if isinstance(rps, bool) or not isinstance(rps, int | float) or rps <= 0:
        problems.append(f"rate_limit.requests_per_second must be a positive number, got {rps!r}")
        return None
    burst = _positive_int(cfg.get("burst"), int(rps / 2) + 1)
    return RateLimitPolicy(float(rps), burst, _compile(cfg.get("key_logic"), "rate_limit.key_logic", problems))


def _dedup(cfg: Any, problems: list[str]) -> DedupPolicy | None:
    if not isinstance(cfg, Mapping):
        return None
    # Orion's code reads window_secs, its docs say retention_secs: accept both (quirk 17).
    window = cfg.get("window_secs", cfg.get("retention_secs"))
    header = cfg.get("header")
    return DedupPolicy(
        header=header.lower() if isinstance(header, str) and header else "idempotency-key",
        window_ms=_positive_int(window, 300) * 1000,
        key_logic=_compile(cfg.get("key_logic"), "deduplication.key_logic", problems),
        return_original=cfg.get("return_original") is True,
    )


def _cache(cfg: Any) -> CachePolicy | None:
    if not isinstance(cfg, Mapping) or cfg.get("enabled") is not True:
        return None
    fields = cfg.get("cache_key_fields")
    names: tuple[str, ...] | None = None
    if isinstance(fields, list) and fields:
        # Orion matches top-level fields only, so its docs' "data.user_id" never matched: accept both.
        names = tuple(str(f).removeprefix("data.") for f in fields)
    return CachePolicy(ttl_ms=_positive_int(cfg.get("ttl_secs"), 300) * 1000, fields=names)


def _rollout(cfg: Any, problems: list[str]) -> RolloutKey | None:
    if cfg is None:
        return None
    if isinstance(cfg, str) and cfg:
        return RolloutKey(kafka_key=True) if cfg == KAFKA_KEY else RolloutKey(header=cfg.lower())
    if isinstance(cfg, Mapping):
        if cfg.get("kafka_key") is True:
            return RolloutKey(kafka_key=True)
        if isinstance(cfg.get("header"), str) and len(cfg) == 1:
            return RolloutKey(header=cfg["header"].lower())
        rule = cfg["logic"] if "logic" in cfg and len(cfg) == 1 else cfg
        logic = _compile(rule, "rollout_key", problems)
        return RolloutKey(logic=logic) if logic is not None else None
    problems.append(f"rollout_key must be a header name, '$kafka_key' or a JSONLogic object, got {cfg!r}")
    return None


def build_policy(name: str, config: Mapping[str, Any]) -> GovernancePolicy:
    """Parse one channel's config; problems are logged and the broken part is disabled."""
    problems: list[str] = []
    keys = config.get("api_keys")
    api_keys: tuple[str, ...] = ()
    if isinstance(keys, str) and keys:
        api_keys = (keys,)
    elif isinstance(keys, list):
        api_keys = tuple(k for k in keys if isinstance(k, str) and k)
    header = config.get("api_key_header")
    mode = config.get("failure_mode", FAIL_OPEN)
    if mode not in (FAIL_OPEN, FAIL_CLOSED):
        problems.append(f"failure_mode must be '{FAIL_OPEN}' or '{FAIL_CLOSED}', got {mode!r}")
    policy = GovernancePolicy(
        channel=name,
        rate_limit=_rate_limit(config.get("rate_limit"), problems),
        dedup=_dedup(config.get("deduplication"), problems),
        cache=_cache(config.get("cache")),
        fail_closed=mode == FAIL_CLOSED,
        api_keys=api_keys,
        api_key_header=header.lower() if isinstance(header, str) and header else "x-api-key",
        rollout=_rollout(config.get("rollout_key"), problems),
        problems=tuple(problems),
    )
    for problem in problems:
        log.warning("channel %s governance config: %s", name, problem)
    return policy


# The snapshot's channel views are immutable and replaced on every config change: compile once per view.
# Keyed by object id (views hold no weakref slot); the view is kept in the value so the id stays valid.
_compiled: dict[int, tuple[Any, GovernancePolicy]] = {}
_MAX_COMPILED = 4096


def policy_for(view: Any) -> GovernancePolicy:
    """The compiled policy of a `ChannelView` (cached for as long as that view object is in use)."""
    hit = _compiled.get(id(view))
    if hit is not None and hit[0] is view:
        return hit[1]
    policy = build_policy(view.name, view.config)
    if len(_compiled) >= _MAX_COMPILED:
        _compiled.clear()  # old snapshots' views: rebuilt on demand if still used
    _compiled[id(view)] = (view, policy)
    return policy


def evaluate_key(logic: Logic, context: Mapping[str, Any], fallback: str | None) -> str | None:
    """Orion's key rule: a string result is used as is, anything else JSON-encoded; an error -> `fallback`."""
    try:
        value = logic.evaluate(context)
    except Exception:
        return fallback
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
