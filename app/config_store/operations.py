"""Orion's lifecycle as pure functions: (current object, request) -> new object, or a QuasarError.

Workflows and channels: `draft -> active -> archived` with versions (orion-semantics §1e):
create makes version 1 as a draft; only a draft can be updated; a new version copies the latest into
a draft (at most one draft); activating the draft with p = 100 archives every other active version, with
p < 100 keeps only the newest previous active version at 100 - p (at most two active); rollout(p) needs two
active versions (p = 100 archives the older); archive archives every active version; rollback activates a
copy of an older version as a new version (an audited change, history stays append-only).

Connectors are simpler: create/update/put/delete; every update adds a new active version and archives
the previous one, so history is kept the same way.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from app.config_store.state import DIRECT_KINDS, KINDS, STATUSES, ObjectState, definition_of, id_field, valid_object_id
from app.digits import parse_uint
from app.errors import BadRequest, Conflict, NotFound

__all__ = [
    "Activate",
    "Archive",
    "Change",
    "Create",
    "Delete",
    "NewVersion",
    "Operation",
    "Put",
    "Restore",
    "Rollback",
    "Rollout",
    "Update",
    "summarize",
]

Versions = dict[int, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Change:
    """The result of an operation: the object's new versions (None = delete) and the version it targeted."""

    op: str
    versions: Versions | None
    version: int | None = None
    releases: dict[str, dict[str, Any]] | None = None  # None: the object's releases stay as they are


def summarize(versions: Mapping[int, Mapping[str, Any]] | None) -> dict[str, Any] | None:
    """Before/after summary for audit records: status and rollout of each version."""
    if versions is None:
        return None
    return {
        str(n): {"status": d.get("status"), "rollout_percentage": d.get("rollout_percentage")}
        for n, d in sorted(versions.items())
    }


def _label(kind: str, object_id: str) -> str:
    return f"{kind} '{object_id}'"


def _clean(kind: str, object_id: str, doc: object) -> dict[str, Any]:
    """The user's definition: a JSON object; lifecycle fields are the store's and are dropped."""
    if not isinstance(doc, Mapping):
        raise BadRequest(f"{kind} definition must be a JSON object")
    given = doc.get(id_field(kind))
    if given is not None and given != object_id:
        raise BadRequest(f"{id_field(kind)} {given!r} does not match the {kind} id {object_id!r}")
    return copy.deepcopy({k: v for k, v in definition_of(kind, doc).items() if k != "id"})


def _version_doc(
    kind: str,
    object_id: str,
    n: int,
    definition: Mapping[str, Any],
    status: str,
    rollout: int,
    created_at: str,
    now: str,
) -> dict[str, Any]:
    return {
        **definition,
        id_field(kind): object_id,
        "version": n,
        "status": status,
        "rollout_percentage": rollout,
        "created_at": created_at,
        "updated_at": now,
    }


def _copy(current: ObjectState) -> Versions:
    return {n: dict(d) for n, d in current.versions.items()}


def _live(kind: str, object_id: str, current: ObjectState | None) -> ObjectState:
    if current is None or current.deleted:
        raise NotFound(f"{_label(kind, object_id)} not found")
    return current


def _percentage(p: object, *, lo: int = 1) -> int:
    if type(p) is not int or not lo <= p <= 100:
        raise BadRequest(f"rollout_percentage must be an integer between {lo} and 100, got {p!r}")
    return p


def _whole(kind: str, p: int) -> int:
    """Rulesets switch versions whole: their callers pin versions, a traffic split belongs to workflows."""
    if kind == "ruleset" and p != 100:
        raise BadRequest(
            "a ruleset has one active version: rollout_percentage must be 100 (split traffic with a workflow "
            "rollout that runs two ruleset versions)"
        )
    return p


def _set(versions: Versions, n: int, now: str, **changes: Any) -> None:
    versions[n] = {**versions[n], **changes, "updated_at": now}


def _archive(versions: Versions, n: int, now: str) -> None:
    # An archived version takes no traffic: its rollout share goes to 0 (it kept the old share before).
    _set(versions, n, now, status="archived", rollout_percentage=0)


def _activate(versions: Versions, n: int, p: int, now: str) -> None:
    """Make version n active at p%; apply Orion's rule to the other active versions."""
    others = sorted((m for m, d in versions.items() if d["status"] == "active" and m != n), reverse=True)
    keep = others[0] if p < 100 and others else None
    for m in others:
        if m == keep:
            _set(versions, m, now, rollout_percentage=100 - p)
        else:
            _archive(versions, m, now)
    _set(versions, n, now, status="active", rollout_percentage=p, activated_at=now)


class Operation:
    """A lifecycle request. `run` is pure; `retry_safe` says whether the writer may re-run it on a
    fresh state after a stale rejection (every precondition is re-checked against that state)."""

    name: str = "operation"
    retry_safe: bool = True

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        raise NotImplementedError

    def check(self, kind: str, object_id: str) -> None:
        if kind not in KINDS:
            raise BadRequest(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        if not valid_object_id(object_id):
            raise BadRequest(
                f"invalid {kind} id {object_id!r}: use letters, digits, '.', '_' or '-' (at most 128, "
                "starting with a letter or digit)"
            )

    def __call__(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        self.check(kind, object_id)
        return self.run(kind, object_id, current, now)


@dataclass(frozen=True)
class Create(Operation):
    """Create version 1: a draft (workflows, channels) or active (connectors). 409 if it exists."""

    doc: Mapping[str, Any]
    name = "create"

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        if current is not None and not current.deleted:
            raise Conflict(f"{_label(kind, object_id)} already exists")
        status = "active" if kind in DIRECT_KINDS else "draft"
        doc = _version_doc(kind, object_id, 1, _clean(kind, object_id, self.doc), status, 100, now, now)
        return Change(self.name, {1: doc}, 1)


@dataclass(frozen=True)
class Update(Operation):
    """Replace the draft's definition (workflows, channels) or add a new active version (connectors).

    Not retry-safe: the caller edited what it saw; if the object changed meanwhile it gets a 409."""

    doc: Mapping[str, Any]
    name = "update"
    retry_safe = False

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        cur = _live(kind, object_id, current)
        definition = _clean(kind, object_id, self.doc)
        versions = _copy(cur)
        if kind in DIRECT_KINDS:
            return _connector_update(kind, object_id, versions, definition, now, self.name)
        n = cur.draft
        if n is None:
            active = ", ".join(str(v) for v in cur.active) or "none"
            raise Conflict(
                f"{_label(kind, object_id)} has no draft to update (active versions: {active}); only drafts "
                "can be changed: create a new version first"
            )
        old = versions[n]
        versions[n] = _version_doc(
            kind,
            object_id,
            n,
            definition,
            "draft",
            old.get("rollout_percentage", 100),
            old.get("created_at", now),
            now,
        )
        return Change(self.name, versions, n)


def _connector_update(
    kind: str, object_id: str, versions: Versions, definition: dict[str, Any], now: str, op: str
) -> Change:
    n = max(versions) + 1
    for m, d in versions.items():
        if d["status"] != "archived":
            _archive(versions, m, now)
    versions[n] = _version_doc(kind, object_id, n, definition, "active", 100, now, now)
    return Change(op, versions, n)


@dataclass(frozen=True)
class Put(Operation):
    """Create or update a connector in one call (GitOps apply)."""

    doc: Mapping[str, Any]
    name = "put"

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        if kind not in DIRECT_KINDS:
            raise BadRequest("put is only for connectors; workflows and channels use create/update/activate")
        if current is None or current.deleted:
            return Create(self.doc).run(kind, object_id, current, now)
        definition = _clean(kind, object_id, self.doc)
        latest = current.versions[max(current.versions)]
        if definition_of(kind, latest) == definition:
            return Change(self.name, _copy(current), max(current.versions))  # unchanged: writer skips it
        return _connector_update(kind, object_id, _copy(current), definition, now, self.name)


def _lifecycle_only(kind: str, op: str) -> None:
    if kind in DIRECT_KINDS:
        raise BadRequest(f"{op} does not apply to {kind}s (they have no drafts or rollouts)")


@dataclass(frozen=True)
class NewVersion(Operation):
    """Copy the latest version into a new draft. 409 if a draft already exists."""

    name = "new_version"

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        _lifecycle_only(kind, self.name)
        cur = _live(kind, object_id, current)
        if cur.draft is not None:
            raise Conflict(f"{_label(kind, object_id)} already has a draft (version {cur.draft})")
        versions = _copy(cur)
        latest = max(versions)
        n = latest + 1
        definition = definition_of(kind, versions[latest])
        versions[n] = _version_doc(kind, object_id, n, copy.deepcopy(definition), "draft", 100, now, now)
        return Change(self.name, versions, n)


@dataclass(frozen=True)
class Activate(Operation):
    """Activate the draft at `rollout_percentage` (default 100). 400 without a draft."""

    rollout_percentage: int = 100
    # the draft's test-suite result, recorded on the activated version (see app/engine/rules/testsuite.py)
    test_suite: Mapping[str, Any] | None = None
    name = "activate"

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        _lifecycle_only(kind, self.name)
        p = _whole(kind, _percentage(self.rollout_percentage))
        cur = _live(kind, object_id, current)
        n = cur.draft
        if n is None:
            raise BadRequest(f"{_label(kind, object_id)} has no draft to activate")
        versions = _copy(cur)
        _activate(versions, n, p, now)
        if self.test_suite is not None:
            versions[n]["test_suite"] = dict(self.test_suite)
        return Change(self.name, versions, n)


@dataclass(frozen=True)
class Rollout(Operation):
    """Split traffic between the two active versions: newer p, older 100 - p; p = 100 archives the older."""

    rollout_percentage: int
    name = "rollout"

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        _lifecycle_only(kind, self.name)
        p = _whole(kind, _percentage(self.rollout_percentage))
        cur = _live(kind, object_id, current)
        active = cur.active
        if len(active) != 2:
            raise BadRequest(f"{_label(kind, object_id)} needs two active versions for a rollout, it has {len(active)}")
        newer, older = active
        versions = _copy(cur)
        _set(versions, newer, now, rollout_percentage=p)
        if p == 100:
            _archive(versions, older, now)
        else:
            _set(versions, older, now, rollout_percentage=100 - p)
        return Change(self.name, versions, newer)


@dataclass(frozen=True)
class Archive(Operation):
    """Archive every active version (removes the object from the engine). 400 if none is active."""

    name = "archive"

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        cur = _live(kind, object_id, current)
        active = cur.active
        if not active:
            raise BadRequest(f"{_label(kind, object_id)} has no active version to archive")
        versions = _copy(cur)
        for n in active:
            _archive(versions, n, now)
        return Change(self.name, versions, active[0])


@dataclass(frozen=True)
class Rollback(Operation):
    """Activate a copy of an older `version` as a new version (at `rollout_percentage`)."""

    version: int
    rollout_percentage: int = 100
    name = "rollback"

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        _lifecycle_only(kind, self.name)
        p = _whole(kind, _percentage(self.rollout_percentage))
        cur = _live(kind, object_id, current)
        if type(self.version) is not int or self.version not in cur.versions:
            raise NotFound(f"{_label(kind, object_id)} has no version {self.version!r}")
        source = cur.versions[self.version]
        if source["status"] == "draft":
            raise BadRequest(f"version {self.version} is a draft: activate it instead of rolling back to it")
        if cur.active and cur.active[0] == self.version and p == 100 and len(cur.active) == 1:
            raise Conflict(f"version {self.version} is already the only active version")
        versions = _copy(cur)
        n = max(versions) + 1
        definition = copy.deepcopy(definition_of(kind, source))
        versions[n] = _version_doc(kind, object_id, n, definition, "draft", p, now, now)
        # The copy is a transient "draft" only so `_activate` treats it like an activation; the stored
        # object never holds two drafts because the copy leaves this function active.
        _activate(versions, n, p, now)
        return Change(self.name, versions, n)


@dataclass(frozen=True)
class Delete(Operation):
    """Delete the object and all its versions. 404 if it does not exist."""

    name = "delete"

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        _live(kind, object_id, current)
        return Change(self.name, None, None)


@dataclass(frozen=True)
class Restore(Operation):
    """Set the whole object to `versions` (from a backup). Shapes are checked like the fold does."""

    versions: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    name = "restore"

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        out: Versions = {}
        if not isinstance(self.versions, Mapping) or not self.versions:
            raise BadRequest(f"{_label(kind, object_id)}: backup entry has no versions")
        for key, doc in self.versions.items():
            if not ((parse_uint(str(key)) or 0) >= 1) or not isinstance(doc, Mapping):
                raise BadRequest(f"{_label(kind, object_id)}: bad version entry {key!r}")
            if doc.get("status") not in STATUSES:
                raise BadRequest(f"{_label(kind, object_id)} v{key}: invalid status {doc.get('status')!r}")
            out[int(key)] = {**copy.deepcopy(dict(doc)), id_field(kind): object_id, "version": int(key)}
        statuses = [d["status"] for d in out.values()]
        if statuses.count("draft") > 1 or statuses.count("active") > 2:
            raise BadRequest(f"{_label(kind, object_id)}: at most one draft and two active versions")
        return Change(self.name, out, max(out))
