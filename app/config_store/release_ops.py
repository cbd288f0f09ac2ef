"""Release requests, reviews and executions as pure operations on the object they change.

Each returns a `Change` carrying the object's versions and its updated `releases`; the fold then decides
with `releases.check_proposal` (the writer asks the same function before writing anything).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from app.config_store.operations import Activate, Archive, Change, Operation, Rollback, Rollout, _live
from app.config_store.releases import EffectivePolicy, derive_state, release_id, version_digest
from app.config_store.state import ObjectState
from app.errors import BadRequest, Conflict, NotFound

__all__ = ["ExecuteRelease", "RequestRelease", "ReviewRelease", "find_release"]

_OPEN = ("requested", "approved", "executing")


def _event(kind: str, by: str, role: str, now: str, **extra: Any) -> dict[str, Any]:
    return {"type": kind, "by": by, "role": role, "at": now, **{k: v for k, v in extra.items() if v is not None}}


def _releases(cur: ObjectState) -> dict[str, dict[str, Any]]:
    return {rid: copy.deepcopy(dict(r)) for rid, r in cur.releases.items()}


def _versions(cur: ObjectState) -> dict[int, dict[str, Any]]:
    return {n: copy.deepcopy(dict(d)) for n, d in cur.versions.items()}


def find_release(current: ObjectState, rid: str) -> dict[str, Any]:
    rel = current.releases.get(rid)
    if rel is None:
        raise NotFound(f"release '{rid}' not found")
    return copy.deepcopy(dict(rel))


@dataclass(frozen=True)
class _Percentage(Operation):
    """Change the rollout percentage of the only active version (a release rolled out in steps)."""

    version: int
    rollout_percentage: int
    name = "rollout"

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        versions = _versions(_live(kind, object_id, current))
        versions[self.version] = {**versions[self.version], "rollout_percentage": self.rollout_percentage}
        versions[self.version]["updated_at"] = now
        return Change(self.name, versions, self.version)


@dataclass(frozen=True)
class RequestRelease(Operation):
    """Ask for a change of the object's live versions: activate a version (at a rollout %), roll back to an
    older version, or archive. Bound to the target version's content digest."""

    action: str
    by: str
    role: str
    policy: EffectivePolicy | None
    version: int | None = None
    rollout_percentage: int = 100
    comment: str | None = None
    name = "release.request"
    retry_safe = False

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        cur = _live(kind, object_id, current)
        if any(r.get("state") in _OPEN for r in cur.releases.values()):
            open_ids = [rid for rid, r in cur.releases.items() if r.get("state") in _OPEN]
            raise Conflict(f"{kind} '{object_id}' already has an open release ({', '.join(open_ids)})")
        if type(self.rollout_percentage) is not int or not 1 <= self.rollout_percentage <= 100:
            raise BadRequest("rollout_percentage must be an integer between 1 and 100")
        rel: dict[str, Any] = {"action": self.action, "author": self.by}
        if self.action == "activate":
            n = self.version if self.version is not None else cur.draft
            if n is None or n not in cur.versions:
                raise BadRequest(f"{kind} '{object_id}' has no draft to release; name a version")
            if cur.versions[n].get("status") != "draft":
                raise BadRequest(f"version {n} is {cur.versions[n].get('status')}: only a draft can be released")
            rel |= {"target_version": n, "digest": version_digest(kind, cur.versions[n])}
            rel["rollout_percentage"] = self.rollout_percentage
        elif self.action == "rollback":
            n = self.version
            if n is None or n not in cur.versions or cur.versions[n].get("status") == "draft":
                raise BadRequest("a rollback names an existing, non-draft version to return to ('version')")
            rel |= {"rollback_to": n, "digest": version_digest(kind, cur.versions[n])}
        elif self.action == "archive":
            if not cur.active:
                raise BadRequest(f"{kind} '{object_id}' has no active version to archive")
        else:
            raise BadRequest(f"unknown release action {self.action!r}: use activate, rollback or archive")
        number = 1 + max((int(r.rsplit(":", 1)[1]) for r in cur.releases), default=0)
        rid = release_id(kind, object_id, number)
        rel["events"] = [_event("requested", self.by, self.role, now, comment=self.comment)]
        rel["requested_at"] = now
        rel["state"] = derive_state(rel, self.policy)
        releases = {**_releases(cur), rid: rel}
        return Change(self.name, _versions(cur), None, releases)


@dataclass(frozen=True)
class ReviewRelease(Operation):
    """Approve, reject, comment on or cancel a release (one event appended)."""

    release: str
    event: str  # approved | rejected | commented | cancelled | impact
    by: str
    role: str
    policy: EffectivePolicy | None
    comment: str | None = None
    details: dict[str, Any] | None = None  # an impact analysis summary
    name = "release.review"
    retry_safe = True

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        cur = _live(kind, object_id, current)
        rel = find_release(cur, self.release)
        rel["events"].append(_event(self.event, self.by, self.role, now, comment=self.comment, details=self.details))
        rel["state"] = derive_state(rel, self.policy)
        releases = {**_releases(cur), self.release: rel}
        return Change(f"release.{self.event}", _versions(cur), None, releases)


@dataclass(frozen=True)
class ExecuteRelease(Operation):
    """Carry out an approved release: change the versions as it says and record the execution, in one
    proposal (so the change and its justification cannot be separated)."""

    release: str
    by: str
    role: str
    policy: EffectivePolicy | None
    rollout_percentage: int | None = None
    test_suite: Mapping[str, Any] | None = None  # the suite result recorded on the activated version
    name = "release.execute"
    retry_safe = False

    def run(self, kind: str, object_id: str, current: ObjectState | None, now: str) -> Change:
        cur = _live(kind, object_id, current)
        rel = find_release(cur, self.release)
        state = rel.get("state")
        if state not in ("approved", "executing"):
            raise Conflict(f"release '{self.release}' is {state}: only an approved release can be executed")
        action = rel["action"]
        pct = self.rollout_percentage if self.rollout_percentage is not None else rel.get("rollout_percentage", 100)
        if action == "activate":
            n = rel["target_version"]
            op: Operation = Activate(pct, test_suite=self.test_suite)
            if state == "executing":
                op = Rollout(pct) if len(cur.active) == 2 else _Percentage(n, pct)
            if state != "executing" and cur.draft != n:
                raise Conflict(f"version {n} is no longer the draft")
        elif action == "rollback":
            op, pct = Rollback(rel["rollback_to"]), 100
        else:
            op, pct = Archive(), 100
        change = op.run(kind, object_id, cur, now)
        releases = _releases(cur)
        rel["events"].append(_event("executed", self.by, self.role, now, percentage=pct))
        rel["state"] = derive_state(rel, self.policy)
        releases[self.release] = rel
        if action == "rollback":
            for rid, other in releases.items():
                if rid != self.release and other.get("state") in ("executing", "active"):
                    other["events"].append(_event("rolled_back", self.by, self.role, now, by_release=self.release))
                    other["state"] = derive_state(other, self.policy)
        return Change(self.name, change.versions, change.version, releases)
