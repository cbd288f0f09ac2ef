"""Release policies decided by the config fold (pure, no broker): what is refused, identically on every
reader, and why. Records are built exactly as the config writer builds them (`proposal_records`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from app.config_store.operations import Activate, Create, Operation, Put, Rollout, Update
from app.config_store.release_ops import ExecuteRelease, RequestRelease, ReviewRelease
from app.config_store.releases import FreezeWindow, ReleasePolicyDoc, effective_policy
from app.config_store.state import ARCHIVE_PREFIX, ConfigState, Outcome
from app.config_store.writer import proposal_records
from app.errors import Conflict

TASKS = [{"id": "t", "name": "t", "function": {"name": "map", "input": {"mappings": [{"path": "data.x", "logic": 1}]}}}]
NOON = int(datetime(2026, 12, 2, 12, 0, tzinfo=UTC).timestamp() * 1000)  # a Wednesday


class Log:
    """A config log folded by several readers, written the way ConfigWriter writes."""

    def __init__(self, readers: int = 2) -> None:
        self.readers = [ConfigState() for _ in range(readers)]
        self.records: list[tuple[str, bytes]] = []

    @property
    def state(self) -> ConfigState:
        return self.readers[0]

    def write(self, kind: str, oid: str, op: Operation, actor: str = "key:ed", ts: int = NOON) -> Outcome:
        state = self.state
        current = state.get_any(kind, oid)
        live = current if current is not None and not current.deleted else None
        change = op(kind, oid, live, "2026-12-02T12:00:00Z")
        releases = change.releases if change.releases is not None else (dict(live.releases) if live else {})
        *archives, (key, value) = proposal_records(
            kind, oid, change, releases, state.revision_of(kind, oid), actor, ts, written=state.has_record
        )
        for archive in archives:
            self.records.append(archive)
            assert {r.apply(len(self.records) - 1, *archive).reason for r in self.readers} == {"archive"}
        offset = len(self.records)
        self.records.append((key, value))
        outcomes = [r.apply(offset, key, value) for r in self.readers]
        assert len({(o.status, o.reason) for o in outcomes}) == 1, outcomes  # every reader decides the same
        assert len({r.fingerprint() for r in self.readers}) == 1
        return outcomes[0]

    def policy(self, oid: str, obj: Any) -> Any:
        tags = {t for d in obj.versions.values() for t in d.get("tags", [])}
        return effective_policy(self.state.policies(), obj.kind, oid, tags)


def wf(oid: str, **extra: Any) -> dict[str, Any]:
    return {"workflow_id": oid, "name": oid, "tasks": TASKS, **extra}


@pytest.fixture
def log() -> Log:
    lg = Log()
    policy = ReleasePolicyDoc.model_validate(
        {"match": {"kinds": ["workflow"], "ids": ["pay-*"]}, "min_approvers": 2, "exclude_author": True}
    )
    assert lg.write("policy", "payments", Put(policy.model_dump(mode="json")), actor="admin").applied
    assert lg.write("workflow", "pay-1", Create(wf("pay-1"))).applied
    return lg


def request(log: Log, oid: str = "pay-1", by: str = "key:ed", **kw: Any) -> str:
    obj = log.state.get("workflow", oid)
    assert obj is not None
    op = RequestRelease(kw.pop("action", "activate"), by, kw.pop("role", "editor"), log.policy(oid, obj), **kw)
    out = log.write("workflow", oid, op, actor=by)
    assert out.applied, out
    after = log.state.get("workflow", oid)
    assert after is not None
    return max(after.releases, key=lambda r: int(r.rsplit(":", 1)[1]))


def review(log: Log, rid: str, event: str, by: str, role: str = "approver", oid: str = "pay-1") -> Outcome:
    obj = log.state.get("workflow", oid)
    assert obj is not None
    return log.write("workflow", oid, ReviewRelease(rid, event, by, role, log.policy(oid, obj)), actor=by)


def execute(
    log: Log, rid: str, by: str = "key:ed", oid: str = "pay-1", ts: int = NOON, pct: int | None = None
) -> Outcome:
    obj = log.state.get("workflow", oid)
    assert obj is not None
    op = ExecuteRelease(rid, by, "editor", log.policy(oid, obj), pct)
    return log.write("workflow", oid, op, actor=by, ts=ts)


def test_direct_activation_of_a_governed_object_is_refused_with_the_way_forward(log: Log) -> None:
    out = log.write("workflow", "pay-1", Activate())
    assert out.status == "refused"
    assert "release policy payments" in out.reason and "/api/v1/admin/releases" in out.reason
    obj = log.state.get("workflow", "pay-1")
    assert obj is not None and obj.active == []


def test_ungoverned_objects_keep_todays_behaviour(log: Log) -> None:
    assert log.write("workflow", "other", Create(wf("other"))).applied
    assert log.write("workflow", "other", Activate()).applied


def test_two_approvals_from_others_then_execution(log: Log) -> None:
    rid = request(log)
    assert rid == "workflow:pay-1:1"
    self_approval = review(log, rid, "approved", "key:ed", role="admin")
    assert self_approval.status == "refused" and "authored this release" in self_approval.reason
    assert review(log, rid, "approved", "key:ann").applied
    with pytest.raises(Conflict, match="only an approved release"):  # one approval of two
        execute(log, rid)
    again = review(log, rid, "approved", "key:ann")
    assert again.status == "refused" and "already approved" in again.reason
    editor_approval = review(log, rid, "approved", "key:eve", role="editor")
    assert editor_approval.status == "refused" and "may not approve" in editor_approval.reason
    assert review(log, rid, "approved", "key:bob").applied
    obj = log.state.get("workflow", "pay-1")
    assert obj is not None and obj.releases[rid]["state"] == "approved"
    assert execute(log, rid).applied
    obj = log.state.get("workflow", "pay-1")
    assert obj is not None and obj.active == [1] and obj.releases[rid]["state"] == "active"


def test_a_version_edited_after_the_request_cannot_be_executed(log: Log) -> None:
    rid = request(log)
    assert review(log, rid, "approved", "key:ann").applied
    assert review(log, rid, "approved", "key:bob").applied
    assert log.write("workflow", "pay-1", Update(wf("pay-1", description="changed"))).applied
    out = execute(log, rid)
    assert out.status == "refused" and "digest mismatch" in out.reason


def test_forged_records_are_refused_by_every_reader(log: Log) -> None:
    """A writer that skips the checks (CLI with topic access, a buggy gateway) gets the same answer."""
    rid = request(log)
    obj = log.state.get("workflow", "pay-1")
    assert obj is not None
    rel = dict(obj.releases[rid])
    rel["events"] = [*rel["events"], {"type": "approved", "by": "key:ed", "role": "approver", "at": "x"}]
    rel["state"] = "requested"

    class Forge(Operation):
        name = "release.review"

        def run(self, kind: str, object_id: str, current: Any, now: str) -> Any:
            from app.config_store.operations import Change

            return Change(self.name, {n: dict(d) for n, d in current.versions.items()}, None, {rid: rel})

    out = log.write("workflow", "pay-1", Forge(), actor="key:ed")
    assert out.status == "refused" and "authored" in out.reason
    rel["events"] = rel["events"][:1]
    rel["state"] = "approved"  # a state that does not follow from the events
    out = log.write("workflow", "pay-1", Forge(), actor="key:ed")
    assert out.status == "refused"


@pytest.mark.parametrize("extra", [1, "x", None, ["list"]])
def test_release_histories_the_checks_cannot_read_are_refused_and_the_fold_goes_on(log: Log, extra: Any) -> None:
    # Review finding: an event that is not an object raised AttributeError out of the fold, which stopped every
    # reader, on every restart, at that offset.
    rid = request(log)
    obj = log.state.get("workflow", "pay-1")
    assert obj is not None
    rel = dict(obj.releases[rid])
    rel["events"] = [*rel["events"], extra]

    class Forge(Operation):
        name = "release.review"

        def run(self, kind: str, object_id: str, current: Any, now: str) -> Any:
            from app.config_store.operations import Change

            return Change(self.name, {n: dict(d) for n, d in current.versions.items()}, None, {rid: rel})

    out = log.write("workflow", "pay-1", Forge(), actor="key:ed")
    assert out.status == "refused" and "release policy check failed" in out.reason, out
    assert log.write("workflow", "pay-1", Update(wf("pay-1", description="after"))).applied


def test_freeze_window_is_judged_on_the_records_own_time(log: Log) -> None:
    frozen = ReleasePolicyDoc.model_validate(
        {
            "match": {"ids": ["pay-*"]},
            "min_approvers": 0,
            "freeze_windows": [{"cron": "0 9 * * 3", "duration_minutes": 480, "timezone": "Europe/Berlin"}],
        }
    )
    assert log.write("policy", "wednesday-freeze", Put(frozen.model_dump(mode="json")), actor="admin").applied
    rid = request(log)
    assert review(log, rid, "approved", "key:ann").applied
    assert review(log, rid, "approved", "key:bob").applied
    # 12:00 UTC on a Wednesday = 13:00 in Berlin: inside 09:00-17:00.
    out = execute(log, rid, ts=NOON)
    assert out.status == "refused" and "freeze window" in out.reason
    assert execute(log, rid, ts=NOON + 5 * 3600 * 1000).applied  # 18:00 Berlin


def test_freeze_window_across_dst() -> None:
    w = FreezeWindow(cron="0 2 * * *", duration_minutes=60, timezone="Europe/Berlin")
    # 2026-03-29: 02:00 does not exist in Berlin (clocks jump to 03:00); croniter moves the fire to 03:00.
    inside = int(datetime(2026, 3, 29, 1, 30, tzinfo=UTC).timestamp() * 1000)  # 03:30 CEST
    outside = int(datetime(2026, 3, 29, 3, 0, tzinfo=UTC).timestamp() * 1000)  # 05:00 CEST
    assert w.covers(int(datetime(2026, 3, 28, 1, 30, tzinfo=UTC).timestamp() * 1000))  # 02:30 CET the day before
    assert not w.covers(outside)
    assert isinstance(w.covers(inside), bool)


def test_two_executions_racing_for_one_object_one_wins(log: Log) -> None:
    from app.config_store.operations import NewVersion

    first = request(log)
    for by in ("key:ann", "key:bob"):
        assert review(log, first, "approved", by).applied
    assert execute(log, first).applied
    assert log.write("workflow", "pay-1", NewVersion()).applied
    rid = request(log, rollout_percentage=50)
    assert review(log, rid, "approved", "key:ann").applied
    assert review(log, rid, "approved", "key:bob").applied
    obj = log.state.get("workflow", "pay-1")
    assert obj is not None
    # Both executors read the same state and propose on the same revision.
    op = ExecuteRelease(rid, "key:ed", "editor", log.policy("pay-1", obj))
    change = op("workflow", "pay-1", obj, "t")
    rev = log.state.revision_of("workflow", "pay-1")
    outcomes = []
    for _ in range(2):
        *_, (key, value) = proposal_records("workflow", "pay-1", change, change.releases or {}, rev, "key:ed", NOON)
        offset = len(log.records)
        log.records.append((key, value))
        outcomes.append([r.apply(offset, key, value) for r in log.readers])
    assert [o[0].status for o in outcomes] == ["applied", "rejected"]
    obj = log.state.get("workflow", "pay-1")
    assert obj is not None and obj.releases[rid]["state"] == "executing"
    # Finishing the rollout is an execution of the same release; a plain rollout is refused.
    assert log.write("workflow", "pay-1", Rollout(100)).status == "refused"
    assert execute(log, rid, pct=100).applied
    obj = log.state.get("workflow", "pay-1")
    assert obj is not None and obj.releases[rid]["state"] == "active"


def test_only_one_open_release_per_object(log: Log) -> None:
    request(log)
    with pytest.raises(Conflict, match="open release"):
        request(log)


def test_rollback_is_a_new_release_and_marks_the_old_one(log: Log) -> None:
    rid = request(log)
    for by in ("key:ann", "key:bob"):
        assert review(log, rid, "approved", by).applied
    assert execute(log, rid).applied
    from app.config_store.operations import NewVersion

    assert log.write("workflow", "pay-1", NewVersion()).applied
    rid2 = request(log)
    for by in ("key:ann", "key:bob"):
        assert review(log, rid2, "approved", by).applied
    assert execute(log, rid2).applied
    # Rollback to version 1: rollback_min_approvers defaults to 0, so it runs at once - as a release.
    back = request(log, action="rollback", version=1)
    assert execute(log, back).applied
    obj = log.state.get("workflow", "pay-1")
    assert obj is not None
    assert obj.releases[rid2]["state"] == "rolled_back"
    assert obj.releases[back]["state"] == "active"
    newest = max(obj.versions)
    assert obj.active == [newest] and obj.versions[newest]["tasks"] == obj.versions[1]["tasks"]


def test_compacted_log_folds_to_the_same_state(log: Log) -> None:
    """Keep only each object's latest accepted proposal and the archive records (what GC + compaction
    leave: archive records are never tombstoned): same fingerprint."""
    rid = request(log)
    for by in ("key:ann", "key:bob"):
        assert review(log, rid, "approved", by).applied
    assert execute(log, rid).applied
    latest: dict[str, int] = {}
    for i, (key, _) in enumerate(log.records):
        if key.startswith(ARCHIVE_PREFIX):
            latest[key] = i
            continue
        obj_key = key.split("#", 1)[0]
        state = ConfigState()
        for j, (k, v) in enumerate(log.records[: i + 1]):
            state.apply(j, k, v)
        if state.get_any(*obj_key.split("/", 1)) is not None and state.get_any(*obj_key.split("/", 1)).key == key:  # type: ignore[union-attr]
            latest[obj_key] = i
    compacted = ConfigState()
    for i in sorted(latest.values()):
        compacted.apply(i, *log.records[i])
    assert compacted.fingerprint() == log.state.fingerprint()


def test_require_tests_needs_a_passing_suite_for_the_exact_digest(log: Log) -> None:
    from app.config_store.releases import version_digest

    strict = ReleasePolicyDoc.model_validate({"match": {"ids": ["pay-*"]}, "min_approvers": 0, "require_tests": True})
    assert log.write("policy", "tested", Put(strict.model_dump(mode="json")), actor="admin").applied
    rid = request(log)
    for by in ("key:ann", "key:bob"):
        assert review(log, rid, "approved", by).applied
    obj = log.state.get("workflow", "pay-1")
    assert obj is not None
    digest = version_digest("workflow", obj.versions[1])

    def run(suite: dict[str, Any] | None) -> Outcome:
        cur = log.state.get("workflow", "pay-1")
        assert cur is not None
        op = ExecuteRelease(rid, "key:ed", "editor", log.policy("pay-1", cur), test_suite=suite)
        return log.write("workflow", "pay-1", op)

    untested = run(None)
    assert untested.status == "refused" and "requires a passing test suite" in untested.reason
    assert run({"digest": "sha256:" + "0" * 64, "total": 3, "passed": 3, "failed": 0}).status == "refused"
    failing = run({"digest": digest, "total": 3, "passed": 2, "failed": 1})
    assert failing.status == "refused" and "did not pass" in failing.reason
    assert run({"digest": digest, "total": 3, "passed": 3, "failed": 0}).applied
