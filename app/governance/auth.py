"""Admin API authentication (Orion's `[admin_auth]`) and per-channel data API keys.

Admin: with `admin_auth_enabled`, every `/api/v1/admin` request must carry `admin_api_key` in
`admin_auth_header`: `Authorization: Bearer <key>` (the default header) or the raw key in any other
header (e.g. `X-API-Key`). Keys may be `env://VAR` references, resolved at use and never stored resolved.
Comparison is constant-time (`hmac.compare_digest`) so the answer time says nothing about the key.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable, Mapping

from fastapi import Request

from app.errors import Unauthorized
from app.settings import Settings

__all__ = ["AdminAuth", "extract_key", "key_matches", "require_admin"]

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


class AdminAuth:
    """`app.state.admin_auth`: `(request) -> principal | None`, raising `Unauthorized` (401)."""

    def __init__(self, enabled: bool, api_key: str | None, header: str = "Authorization") -> None:
        if enabled and not api_key:
            raise ValueError("admin auth is enabled but no admin_api_key is set (QUASAR_ADMIN_API_KEY)")
        self.enabled = enabled
        self.api_key = api_key  # as written (may be an env:// reference)
        self.header = header or "Authorization"

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminAuth:
        return cls(settings.admin_auth_enabled, settings.admin_api_key, settings.admin_auth_header)

    def __call__(self, request: Request) -> str | None:
        if not self.enabled:
            return None
        headers = {k.lower(): v for k, v in request.headers.items()}
        presented = extract_key(headers, self.header)
        assert self.api_key is not None
        if not key_matches(presented, (self.api_key,)):
            if presented is None:
                raise Unauthorized(f"Missing admin credentials (header {self.header})")
            raise Unauthorized("Invalid admin credentials")
        return "admin"


async def require_admin(request: Request) -> str | None:
    """FastAPI dependency: the app's `AdminAuth` decides (none installed: open, as Orion's default)."""
    check = getattr(request.app.state, "admin_auth", None)
    if check is None:
        return None
    principal: str | None = check(request)
    return principal
