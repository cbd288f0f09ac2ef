"""The governance store's keys (one set for the HTTP and the Kafka path) and Orion's key-rule result rule.

`<prefix>gov:rl:<channel>:<client>` rate-limit buckets, `<prefix>gov:dd:<channel>:<caller>:<key>`
idempotency claims, `<prefix>gov:rc:<channel>:<digest>` cached responses. Idempotency keys and cached
responses belong to one caller (`caller` is a digest of who asked, see `Governor.caller_identity`).
Client-chosen parts longer than 200 characters are replaced by their digest, so a key's size is bounded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import orjson

from app.engine.jsonlogic import Logic

__all__ = ["cache_digest", "cache_store_key", "dedup_store_key", "digest", "evaluate_key", "rate_store_key"]

_MAX_KEY = 200


def _digest(value: Any) -> str:
    return hashlib.blake2b(orjson.dumps(value, option=orjson.OPT_SORT_KEYS), digest_size=16).hexdigest()


def _bounded(key: str) -> str:
    return key if len(key) <= _MAX_KEY else "h:" + _digest(key)


def rate_store_key(prefix: str, channel: str, client: str) -> str:
    return f"{prefix}gov:rl:{channel}:{_bounded(client)}"


def dedup_store_key(prefix: str, channel: str, caller: str, raw: str) -> str:
    """Scoped per channel (Orion quirk 16: its keys were global) and per caller."""
    return f"{prefix}gov:dd:{channel}:{_digest(caller)}:{_bounded(raw)}"


def cache_store_key(prefix: str, channel: str, digest: str) -> str:
    return f"{prefix}gov:rc:{channel}:{digest}"


def cache_digest(fields: tuple[str, ...] | None, data: Any, params: Any, query: Any = None, caller: str = "") -> str:
    """Digest of the whole `data`, or of the listed top-level fields (missing = null), plus route params,
    query and the caller's identity."""
    if fields is not None:
        src = data if isinstance(data, dict) else {}
        data = [src.get(f) for f in fields]
    return _digest([data, params or {}, query or {}, caller])


def digest(value: Any) -> str:
    """A short, stable digest of a JSON value (identities in keys never hold a credential in clear)."""
    return _digest(value)


def evaluate_key(logic: Logic, context: Mapping[str, Any], fallback: str | None) -> str | None:
    """Orion's key rule: a string result is used as is, anything else JSON-encoded; an error -> `fallback`."""
    try:
        value = logic.evaluate(context)
    except Exception:
        return fallback
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
