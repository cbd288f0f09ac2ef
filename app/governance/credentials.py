"""Data API keys and admin keys: extract the presented key, compare it in constant time (no HTTP imports).

Keys may be `env://VAR` references, resolved at use and never stored resolved. Comparison is
constant-time (`hmac.compare_digest`) so the answer time says nothing about the key.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping

__all__ = ["extract_key", "key_matches"]

log = logging.getLogger("quasar.governance")


def _resolve(ref: str) -> str | None:
    """`env://VAR` -> its value (None when unset); anything else as written. Resolved per use on purpose."""
    from app.secrets import resolve_secret

    try:
        value = resolve_secret(ref)
    except Exception as exc:  # SecretMissing: a key that cannot be resolved matches nothing
        log.error("API key reference cannot be resolved: %s", exc)
        return None
    return value if isinstance(value, str) and value else None


def extract_key(headers: Mapping[str, str], header: str) -> str | None:
    """The presented key: `Authorization: Bearer <key>` for the authorization header, else the raw value."""
    raw = headers.get(header.lower())
    if raw is None:
        return None
    if header.lower() == "authorization":
        scheme, _, token = raw.strip().partition(" ")
        return token.strip() or None if scheme.lower() == "bearer" else None
    return raw.strip() or None


def key_matches(presented: str | None, accepted: Iterable[str]) -> bool:
    """Constant-time check of `presented` against every accepted key (no early exit on a match)."""
    if not presented:
        return False
    given = presented.encode()
    ok = False
    for ref in accepted:
        key = _resolve(ref)
        if key is not None and hmac.compare_digest(given, key.encode()):
            ok = True
    return ok
