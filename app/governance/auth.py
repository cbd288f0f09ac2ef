"""Admin API authentication (Orion's `[admin_auth]`) and per-channel data API keys.

Admin: with `admin_auth_enabled`, every `/api/v1/admin` request must carry `admin_api_key` in
`admin_auth_header`: `Authorization: Bearer <key>` (the default header) or the raw key in any other
header (e.g. `X-API-Key`). Keys may be `env://VAR` references, resolved at use and never stored resolved.
Comparison is constant-time (`hmac.compare_digest`) so the answer time says nothing about the key.
Scoped keys with roles (reader/editor/approver/admin, see `app.identity`): bootstrap keys from settings
(`admin_keys`) and keys created through the API, stored on the config topic as sha256 hashes only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from fastapi import Request

from app.errors import Unauthorized
from app.governance.credentials import extract_key, key_matches
from app.identity import ADMIN, ROLES, KeyScope, Principal, hash_key
from app.settings import Settings

__all__ = ["AdminAuth", "StoredKeys", "extract_key", "key_matches", "require_admin"]


class AdminAuth:
    """`app.state.admin_auth`: `(request) -> Principal | None`, raising `Unauthorized` (401).

    Keys, tried in this order: the bootstrap admin key (`admin_api_key`, principal `admin`), the bootstrap
    keys of `admin_keys` (each with a name, role and scope; `env://` references allowed), then the keys
    stored hashed on the config topic (`key_lookup(hash) -> Principal | None`, set by the gateway).
    """

    def __init__(
        self,
        enabled: bool,
        api_key: str | None,
        header: str = "Authorization",
        *,
        bootstrap: Iterable[Mapping[str, Any]] = (),
        key_lookup: Callable[[str], Principal | None] | None = None,
    ) -> None:
        self.bootstrap = [_bootstrap_principal(entry) for entry in bootstrap]
        if enabled and not api_key and not self.bootstrap:
            raise ValueError("admin auth is enabled but no admin_api_key is set (QUASAR_ADMIN_API_KEY)")
        self.enabled = enabled
        self.api_key = api_key  # as written (may be an env:// reference)
        self.header = header or "Authorization"
        self.key_lookup = key_lookup

    @classmethod
    def from_settings(cls, settings: Settings) -> AdminAuth:
        return cls(
            settings.admin_auth_enabled,
            settings.admin_api_key,
            settings.admin_auth_header,
            bootstrap=settings.admin_keys,
        )

    def __call__(self, request: Request) -> Principal | None:
        if not self.enabled:
            return None
        headers = {k.lower(): v for k, v in request.headers.items()}
        presented = extract_key(headers, self.header)
        if presented is None:
            if self.header.lower() == "authorization" and headers.get("authorization", "").strip():
                raise Unauthorized("Malformed Authorization header: expected 'Authorization: Bearer <key>'")
            raise Unauthorized(f"Missing admin credentials (header {self.header})")
        principal = self.identify(presented)
        if principal is None:
            raise Unauthorized("Invalid admin credentials")
        return principal

    def identify(self, presented: str) -> Principal | None:
        """The principal `presented` authenticates as, or None. Every bootstrap key is compared (constant time)."""
        found: Principal | None = None
        if self.api_key is not None and key_matches(presented, (self.api_key,)):
            found = ADMIN
        for ref, principal in self.bootstrap:
            if key_matches(presented, (ref,)) and found is None:
                found = principal
        if found is None and self.key_lookup is not None:
            found = self.key_lookup(hash_key(presented))
        return found


def _bootstrap_principal(entry: Mapping[str, Any]) -> tuple[str, Principal]:
    """`{"name", "role", "key", "scope"?}` from `admin_keys` -> (key reference, principal)."""
    try:
        name, role, key = entry["name"], entry["role"], entry["key"]
    except (KeyError, TypeError):
        raise ValueError('every admin_keys entry needs "name", "role" and "key"') from None
    if role not in ROLES:
        raise ValueError(f"admin_keys entry {name!r}: role {role!r} is not one of {', '.join(ROLES)}")
    scope = KeyScope.model_validate(entry.get("scope") or {})
    return str(key), Principal(f"key:{name}", role, scope)


async def require_admin(request: Request) -> Principal | None:
    """FastAPI dependency: the app's `AdminAuth` decides (none installed: open, as Orion's default)."""
    check = getattr(request.app.state, "admin_auth", None)
    if check is None:
        return None
    principal: Principal | None = check(request)
    return principal


class StoredKeys:
    """`key hash -> Principal` over the API keys folded from the config topic (rebuilt when the fold moves).

    `state_of()` returns the reader's current `ConfigState` (None while there is no config store)."""

    def __init__(self, state_of: Callable[[], Any]) -> None:
        self._state_of = state_of
        self._generation: int | None = None
        self._index: dict[str, Principal] = {}

    def __call__(self, key_hash: str) -> Principal | None:
        state = self._state_of()
        if state is None:
            return None
        if state.generation != self._generation:
            self._index = _index_keys(state)
            self._generation = state.generation
        return self._index.get(key_hash)


def _index_keys(state: Any) -> dict[str, Principal]:
    from app.config_store.state import definition_of
    from app.identity import principal_from_doc

    index: dict[str, Principal] = {}
    for obj in state.objects("apikey"):
        for n in obj.active:  # revoked keys are archived or deleted: never active
            if obj.compiled[n].valid:
                doc = definition_of("apikey", obj.versions[n])
                index[str(doc["key_hash"])] = principal_from_doc(obj.id, doc)
    return index
