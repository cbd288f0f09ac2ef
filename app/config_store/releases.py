"""Governed change: release policies and releases, decided by the fold (pure, deterministic).

A release lives *inside* the object it changes (`ObjectState.releases`), so requesting, approving and
executing it are proposals on that one object: every instance folds the same records to the same decision,
and two executions racing for one object are two proposals on one revision — one wins, the other is stale
(Ordo's release race, closed by construction).

A **policy** (kind `policy`, admin-only) matches objects by kind, id globs and tag globs. When one applies,
the fold refuses (`Outcome.status == "refused"`) every proposal that changes the object's active versions
or rollout unless the same proposal records the execution of an approved release of exactly that change,
and refuses release events that break the policy: self-approval with `exclude_author`, an approver whose
role is not allowed, too few approvals, an execution inside a freeze window. Time is the proposal's own
`ts` (the writer's clock, carried in the record), never the reader's clock, so replays decide the same.

Compaction: a proposal is judged against the object's previous state only when it directly follows it
(`expected_revision == current revision`). After compaction removed intermediate proposals, the surviving
latest one was accepted when first folded and is taken as is (writers tombstone their refused proposals,
so refused records do not survive compaction; see docs/internals.md).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = [
    "RELEASE_STATES",
    "EffectivePolicy",
    "FreezeWindow",
    "ReleasePolicyDoc",
    "active_set",
    "check_proposal",
    "derive_state",
    "effective_policy",
    "release_id",
    "version_digest",
]

RELEASE_KINDS = ("workflow", "channel", "ruleset", "flow")
RELEASE_STATES = ("requested", "approved", "rejected", "executing", "active", "rolled_back", "cancelled")
Action = Literal["activate", "rollback", "archive"]


class FreezeWindow(BaseModel):
    """No execution from each `cron` fire time for `duration_minutes` (in `timezone`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    cron: str
    duration_minutes: int = Field(ge=1, le=60 * 24 * 31)
    timezone: str = "UTC"
    reason: str = ""

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        if not croniter.is_valid(v):
            raise ValueError(f"invalid cron expression {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        try:
            ZoneInfo(v)
        except Exception:
            raise ValueError(f"unknown IANA timezone {v!r}") from None
        return v

    def covers(self, ts_ms: int) -> bool:
        """Is `ts_ms` inside a window? (the last fire at or before ts, plus the duration)."""
        tz = ZoneInfo(self.timezone)
        at = datetime.fromtimestamp(ts_ms / 1000, UTC).astimezone(tz)
        # The last fire time <= at: step back from just after `at`.
        last = croniter(self.cron, at + timedelta(seconds=1)).get_prev(datetime)
        return bool(last <= at < last + timedelta(minutes=self.duration_minutes))


class PolicyMatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    kinds: tuple[str, ...] = RELEASE_KINDS
    ids: tuple[str, ...] = ("*",)
    tags: tuple[str, ...] = ()

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [k for k in v if k not in RELEASE_KINDS]
        if bad:
            raise ValueError(f"kinds {bad} cannot be released; allowed: {', '.join(RELEASE_KINDS)}")
        return v

    def matches(self, kind: str, object_id: str, tags: Iterable[str]) -> bool:
        if kind not in self.kinds:
            return False
        if any(fnmatch.fnmatchcase(object_id, p) for p in self.ids):
            return True
        return any(fnmatch.fnmatchcase(t, p) for t in tags for p in self.tags)


class ReleasePolicyDoc(BaseModel):
    """A release policy (config kind `policy`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    match: PolicyMatch = Field(default_factory=PolicyMatch)
    min_approvers: int = Field(default=1, ge=0, le=10)
    exclude_author: bool = True
    approver_roles: tuple[str, ...] = ("approver", "admin")
    rollback_min_approvers: int = Field(default=0, ge=0, le=10, description="Approvals a rollback needs.")
    require_tests: bool = Field(
        default=False, description="An activation needs the version's test suite passed for its exact digest."
    )
    freeze_windows: tuple[FreezeWindow, ...] = ()
    description: str = ""


@dataclass(frozen=True)
class EffectivePolicy:
    """Every policy matching one object, combined (strictest wins)."""

    names: tuple[str, ...]
    min_approvers: int = 0
    rollback_min_approvers: int = 0
    exclude_author: bool = False
    require_tests: bool = False
    approver_roles: frozenset[str] = frozenset({"approver", "admin"})
    freeze_windows: tuple[FreezeWindow, ...] = field(default=())

    def frozen_at(self, ts_ms: int) -> FreezeWindow | None:
        return next((w for w in self.freeze_windows if w.covers(ts_ms)), None)

    def needed(self, action: str) -> int:
        return self.rollback_min_approvers if action == "rollback" else self.min_approvers


def effective_policy(
    policies: Iterable[tuple[str, ReleasePolicyDoc]], kind: str, object_id: str, tags: Iterable[str]
) -> EffectivePolicy | None:
    tags = list(tags)
    hits = [(n, p) for n, p in policies if p.match.matches(kind, object_id, tags)]
    if not hits:
        return None
    roles = frozenset(hits[0][1].approver_roles)
    for _, p in hits[1:]:
        roles &= frozenset(p.approver_roles)
    return EffectivePolicy(
        names=tuple(n for n, _ in hits),
        min_approvers=max(p.min_approvers for _, p in hits),
        rollback_min_approvers=max(p.rollback_min_approvers for _, p in hits),
        exclude_author=any(p.exclude_author for _, p in hits),
        require_tests=any(p.require_tests for _, p in hits),
        approver_roles=roles,
        freeze_windows=tuple(w for _, p in hits for w in p.freeze_windows),
    )


def version_digest(kind: str, doc: Mapping[str, Any]) -> str:
    """Content digest of a version's definition (what approvals and test-suite results are bound to)."""
    from app.config_store.state import definition_of
    from app.engine.rules.testsuite import content_digest

    return content_digest(definition_of(kind, doc))


def release_id(kind: str, object_id: str, n: int) -> str:
    return f"{kind}:{object_id}:{n}"


def active_set(versions: Mapping[int, Mapping[str, Any]]) -> dict[int, int]:
    """Active version -> rollout percentage: what a release changes."""
    return {n: int(d.get("rollout_percentage", 100) or 100) for n, d in versions.items() if d.get("status") == "active"}


# -- the release state machine ---------------------------------------------------------------------
def derive_state(release: Mapping[str, Any], policy: EffectivePolicy | None) -> str:
    """A release's state from its events (the stored `state` must equal this)."""
    state = "requested"
    approvals: set[str] = set()
    needed = policy.needed(str(release.get("action"))) if policy is not None else 0
    for ev in release.get("events", ()):
        t = ev.get("type")
        if t == "approved":
            approvals.add(str(ev.get("by")))
            if state == "requested" and len(approvals) >= needed:
                state = "approved"
        elif t == "rejected":
            state = "rejected"
        elif t == "cancelled":
            state = "cancelled"
        elif t == "executed":
            state = "active" if int(ev.get("percentage", 100)) >= 100 else "executing"
        elif t == "rolled_back":
            state = "rolled_back"
    if state == "requested" and needed == 0 and release.get("events"):
        state = "approved"
    return state


def _check_event(
    release: Mapping[str, Any], prev_state: str, ev: Mapping[str, Any], policy: EffectivePolicy | None
) -> str | None:
    t, by, role = ev.get("type"), ev.get("by"), ev.get("role")
    if not isinstance(by, str) or not by:
        return "release event without a principal ('by')"
    author = release.get("author")
    if t == "approved":
        if prev_state not in ("requested", "approved"):
            return f"cannot approve a release that is {prev_state}"
        if policy is not None and policy.exclude_author and by == author:
            return f"{by} authored this release and may not approve it (policy {', '.join(policy.names)})"
        roles = policy.approver_roles if policy is not None else frozenset({"approver", "admin"})
        if role not in roles:
            return f"{by} (role {role}) may not approve: approver roles are {', '.join(sorted(roles))}"
        if any(e.get("type") == "approved" and e.get("by") == by for e in release.get("events", ())[:-1]):
            return f"{by} has already approved this release"
    elif t == "rejected":
        if prev_state not in ("requested", "approved"):
            return f"cannot reject a release that is {prev_state}"
        if role not in ("approver", "admin"):
            return f"{by} (role {role}) may not reject a release"
    elif t == "cancelled":
        if prev_state not in ("requested", "approved", "executing"):
            return f"cannot cancel a release that is {prev_state}"
        if by != author and role != "admin":
            return "only the author or an admin may cancel a release"
    elif t in ("commented", "impact"):
        pass  # evidence: comments and impact analysis summaries, any state
    elif t in ("executed", "rolled_back"):
        pass  # checked with the versions they change
    else:
        return f"unknown release event {t!r}"
    return None


@dataclass(frozen=True)
class Proposed:
    """What the fold needs of a proposal (kept free of the state module's private types)."""

    kind: str
    id: str
    op: str
    expected_revision: int
    versions: Mapping[int, Mapping[str, Any]]
    releases: Mapping[str, Mapping[str, Any]]
    ts: int | None


def check_proposal(
    p: Proposed,
    prev_versions: Mapping[int, Mapping[str, Any]],
    prev_releases: Mapping[str, Mapping[str, Any]],
    policy: EffectivePolicy | None,
) -> str | None:
    """Why the fold refuses this proposal, or None. `prev_*` is the object's state the proposal follows."""
    changed = {rid: r for rid, r in p.releases.items() if prev_releases.get(rid) != r}
    if any(rid not in p.releases for rid in prev_releases):
        return "releases cannot be removed (only the whole object)"
    executed: list[tuple[str, Mapping[str, Any]]] = []
    for rid, rel in changed.items():
        events = list(rel.get("events", ()))
        before = prev_releases.get(rid)
        if before is None:
            if len(events) != 1 or events[0].get("type") != "requested":
                return f"release {rid} must start with exactly one 'requested' event"
            if rel.get("author") != events[0].get("by"):
                return f"release {rid}: author must be the requester"
            new_events = []
            prev_state = "requested"
        else:
            old_events = list(before.get("events", ()))
            if events[: len(old_events)] != old_events or len(events) <= len(old_events):
                return f"release {rid}: events are append-only"
            for key in ("author", "action", "target_version", "rollback_to", "digest"):
                if rel.get(key) != before.get(key):
                    return f"release {rid}: {key} cannot change"
            new_events = events[len(old_events) :]
            prev_state = derive_state(before, policy)
        for i, ev in enumerate(new_events):
            partial = {**rel, "events": events[: len(events) - len(new_events) + i + 1]}
            reason = _check_event(partial, prev_state, ev, policy)
            if reason:
                return f"release {rid}: {reason}"
            if ev.get("type") == "executed":
                executed.append((rid, rel))
                if prev_state not in ("approved", "executing"):
                    needed = policy.needed(str(rel.get("action"))) if policy is not None else 0
                    return f"release {rid} is {prev_state}, not approved ({needed} approval(s) needed)"
                if policy is not None and p.ts is not None:
                    window = policy.frozen_at(p.ts)
                    if window is not None:
                        return f"release {rid}: inside freeze window '{window.cron}' ({window.reason or 'frozen'})"
                if policy is not None and p.ts is None and policy.freeze_windows:
                    return "an execution record must carry its time ('ts') where freeze windows apply"
            prev_state = derive_state(partial, policy)
        if rel.get("state") != derive_state(rel, policy):
            return f"release {rid}: state {rel.get('state')!r} does not follow from its events"
    if len(executed) > 1:
        return "one proposal executes at most one release"
    rollback_marks = any(
        ev.get("type") == "rolled_back" for rel in changed.values() for ev in rel.get("events", ())[-1:]
    )
    if rollback_marks and not (executed and executed[0][1].get("action") == "rollback"):
        return "releases are marked rolled back only by the execution of a rollback release"
    before_set, after_set = active_set(prev_versions), active_set(p.versions)
    if before_set == after_set:
        return None if not executed else f"release {executed[0][0]} is executed but changes nothing"
    if policy is None:
        return None
    if not executed:
        return (
            f"{p.kind} '{p.id}' is governed by release policy {', '.join(policy.names)}: activation, rollout, "
            "rollback and archive go through an approved release (POST /api/v1/admin/releases)"
        )
    rid, rel = executed[0]
    return _matches_release(rel, p, after_set) or _tests_passed(policy, rel, p)


def _tests_passed(policy: EffectivePolicy, rel: Mapping[str, Any], p: Proposed) -> str | None:
    """With `require_tests`, the activated version carries a passing suite result for its own digest."""
    if not policy.require_tests or rel.get("action") != "activate":
        return None
    n = rel.get("target_version")
    doc = p.versions.get(n) if isinstance(n, int) else None
    result = doc.get("test_suite") if doc is not None else None
    digest = version_digest(p.kind, doc) if doc is not None else None
    if not isinstance(result, Mapping) or result.get("digest") != digest:
        return f"policy {', '.join(policy.names)} requires a passing test suite for version {n} ({digest})"
    if not result.get("total") or result.get("failed"):
        return f"version {n}'s test suite did not pass ({result.get('failed')} of {result.get('total')} failed)"
    return None


def _matches_release(rel: Mapping[str, Any], p: Proposed, after: Mapping[int, int]) -> str | None:
    """The versions must change exactly as the executed release says."""
    action = rel.get("action")
    pct = int(rel["events"][-1].get("percentage", 100))
    if action == "activate":
        n = rel.get("target_version")
        if not isinstance(n, int):
            return "an activate release names its target_version"
        doc = p.versions.get(n)
        if doc is None or after.get(n) != pct:
            return f"release executes version {n} at {pct}%, but the proposal does not"
        if version_digest(p.kind, doc) != rel.get("digest"):
            return f"version {n} changed after the release was requested (digest mismatch)"
        return None
    if action == "archive":
        return None if not after else "an archive release leaves no active version"
    if action == "rollback":
        n = rel.get("rollback_to")
        newest = max(p.versions) if p.versions else None
        if newest is None or after.get(newest) != 100 or not isinstance(n, int) or n not in p.versions:
            return f"a rollback release activates a copy of version {n} as the newest version"
        if version_digest(p.kind, p.versions[newest]) != version_digest(p.kind, p.versions[n]):
            return f"the new version is not a copy of version {n}"
        return None
    return f"unknown release action {action!r}"
