"""Who may change what: admin principals, roles, scopes and the route -> permission table.

Pure (no HTTP, no Kafka): the gateway asks `required_permission(method, route)` and `Principal.allows`;
the config store validates stored API-key documents with `ApiKeyDoc`.

Roles are cumulative where it makes sense:
- `reader`: every read (GET) of the admin API;
- `editor`: reader + create/update drafts, new versions, validate, dry-run, import, request releases;
- `approver`: reader + approve/reject releases (an approver cannot author: separation of duties);
- `admin`: everything (activation, rollout, rollback, delete, restore, backup, keys, reloads, breakers);
- `worker`: only the task bridge (poll, complete and fail flows' external tasks over HTTP); a scope's
  `ids` then name the handlers it may work for. It reads nothing else.

Scopes (optional) narrow *writes* to objects whose id (channels, workflows, rulesets, ...) matches one of
the key's `ids` globs, or that carry a tag matching one of its `tags` globs. Reads are not scoped:
definitions are not secret (secrets are masked in every response).
"""

from __future__ import annotations

import fnmatch
import hashlib
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "ROLES",
    "ApiKeyDoc",
    "KeyScope",
    "Permission",
    "Principal",
    "hash_key",
    "new_key",
    "required_permission",
]

ROLES: tuple[str, ...] = ("reader", "editor", "approver", "admin", "worker")
Role = Literal["reader", "editor", "approver", "admin", "worker"]
KEY_PREFIX = "qsr_"


class Permission(IntEnum):
    """What a route needs. The order is not a hierarchy: `Principal.allows` decides per role."""

    READ = 1
    EDIT = 2
    APPROVE = 3
    ADMIN = 4
    WORK = 5  # the task bridge: poll, complete, fail external tasks


_GRANTS: dict[str, frozenset[Permission]] = {
    "reader": frozenset({Permission.READ}),
    "editor": frozenset({Permission.READ, Permission.EDIT}),
    "approver": frozenset({Permission.READ, Permission.APPROVE}),
    "admin": frozenset(Permission),
    "worker": frozenset({Permission.WORK}),
}


class KeyScope(BaseModel):
    """Write scope of a key: object id globs and tag globs (either matching is enough)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ids: tuple[str, ...] = Field(default=(), description="Glob patterns of object ids (e.g. 'orders-*').")
    tags: tuple[str, ...] = Field(default=(), description="Glob patterns of tags (e.g. 'team-payments').")

    @property
    def unrestricted(self) -> bool:
        return not self.ids and not self.tags

    def covers(self, object_id: str | None, tags: Iterable[str] = ()) -> bool:
        if self.unrestricted:
            return True
        if object_id is not None and any(fnmatch.fnmatchcase(object_id, p) for p in self.ids):
            return True
        return any(fnmatch.fnmatchcase(t, p) for t in tags for p in self.tags)


class ApiKeyDoc(BaseModel):
    """An admin API key as stored on the config topic: only the key's hash, never the key."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    role: Role
    key_hash: str = Field(description="sha256:<hex> of the key (keys are random, 32 bytes: no slow hash needed).")
    scope: KeyScope = Field(default_factory=KeyScope)
    description: str = ""
    created_by: str = ""

    @field_validator("key_hash")
    @classmethod
    def _hash_form(cls, v: str) -> str:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", v):
            raise ValueError("key_hash must be 'sha256:' followed by 64 lowercase hex digits")
        return v


def new_key() -> str:
    """A fresh random key (shown once at creation, stored only as its hash)."""
    return KEY_PREFIX + secrets.token_urlsafe(32)


def hash_key(key: str) -> str:
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated admin caller: its audit name (`key:<name>`, `admin`), role and write scope."""

    name: str
    role: str
    scope: KeyScope = field(default_factory=KeyScope)

    def allows(self, permission: Permission) -> bool:
        return permission in _GRANTS.get(self.role, frozenset())

    def may_write(self, object_id: str | None, tags: Iterable[str] = ()) -> bool:
        return self.scope.covers(object_id, tags)


ADMIN = Principal("admin", "admin")

# (method, route template) -> permission, for routes the default rule gets wrong. Default: GET/HEAD read,
# anything else admin (a route nobody classified is closed, not open).
_EXPLICIT: dict[tuple[str, str], Permission] = {
    # Flow instances (app/gateway/flows.py): starting and signalling is an editor's work, not an admin's.
    ("POST", "/api/v1/flows/{flow_id}/instances"): Permission.EDIT,
    ("POST", "/api/v1/instances/{instance_id}/signals"): Permission.EDIT,
    # The task bridge (app/gateway/tasks.py): a worker key's whole business.
    ("POST", "/api/v1/tasks/{handler}/poll"): Permission.WORK,
    ("POST", "/api/v1/tasks/{task_id}/complete"): Permission.WORK,
    ("POST", "/api/v1/tasks/{task_id}/fail"): Permission.WORK,
    # Channel operations (app/gateway/admin_channels.py) act on production consumption: pausing stops a
    # channel, a seek re-runs (side effects again) or skips records. Admins only, said here on purpose.
    ("POST", "/channels/{object_id}/pause"): Permission.ADMIN,
    ("POST", "/channels/{object_id}/resume"): Permission.ADMIN,
    ("POST", "/channels/{object_id}/offsets"): Permission.ADMIN,
}
_EDIT_SUFFIXES = ("/validate", "/test", "/test-suite", "/versions", "/import", "/diff", "/replay")
_EDIT_COLLECTIONS = ("workflows", "channels", "rulesets", "flows", "schedules", "testsuites")
_ADMIN_READS = ("/backup",)


def required_permission(method: str, route: str) -> Permission:
    """The permission an admin route needs. `route` is the path template (`/api/v1/admin/x/{object_id}`)."""
    method = method.upper()
    path = route.removeprefix("/api/v1/admin")
    explicit = _EXPLICIT.get((method, path))
    if explicit is not None:
        return explicit
    if method in ("GET", "HEAD"):
        return Permission.ADMIN if path.endswith(_ADMIN_READS) else Permission.READ
    parts = [p for p in path.split("/") if p]
    if not parts:
        return Permission.ADMIN
    collection = parts[0]
    if collection == "releases":
        if path.endswith(("/approve", "/reject")):
            return Permission.APPROVE
        if method == "POST" and (len(parts) == 1 or path.endswith(("/comments", "/execute", "/cancel"))):
            return Permission.EDIT  # request, comment, execute once approved, cancel (the fold checks who)
        return Permission.ADMIN
    if collection in _EDIT_COLLECTIONS:
        if method == "POST" and len(parts) == 1:
            return Permission.EDIT  # create a draft
        if method == "PUT" and len(parts) == 2:
            return Permission.EDIT  # update the draft
        if method == "POST" and path.endswith(_EDIT_SUFFIXES):
            return Permission.EDIT
    elif collection == "connectors" and path.endswith("/validate"):
        return Permission.EDIT
    return Permission.ADMIN


def matrix(routes: Iterable[tuple[str, str]]) -> dict[tuple[str, str], dict[str, bool]]:
    """For docs and tests: route -> role -> allowed."""
    out: dict[tuple[str, str], dict[str, bool]] = {}
    for method, route in routes:
        need = required_permission(method, route)
        out[(method, route)] = {role: need in _GRANTS[role] for role in ROLES}
    return out


def principal_from_doc(name: str, doc: Mapping[str, Any]) -> Principal:
    """The principal a stored key document stands for (its audit name is `key:<name>`)."""
    parsed = ApiKeyDoc.model_validate(doc)
    return Principal(f"key:{name}", parsed.role, parsed.scope)
