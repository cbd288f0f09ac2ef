"""Orion's lifecycle as pure operations (`app.config_store.operations`), good and bad paths."""

from __future__ import annotations

from typing import Any

import pytest

from app.config_store.operations import (
    Activate,
    Archive,
    Change,
    Create,
    Delete,
    NewVersion,
    Operation,
    Put,
    Restore,
    Rollback,
    Rollout,
    Update,
    summarize,
)
from app.config_store.state import ObjectState
from app.errors import BadRequest, Conflict, NotFound, QuasarError

NOW = "2025-01-01T00:00:00.000Z"
WF = {"name": "orders", "condition": True, "tasks": []}


def as_state(change: Change, kind: str = "workflow", oid: str = "wf", revision: int = 1) -> ObjectState:
    assert change.versions is not None
    return ObjectState(kind, oid, revision, change.versions, {}, "k", 0)


def run(*ops: Operation, kind: str = "workflow", oid: str = "wf") -> ObjectState:
    """Apply operations in sequence from nothing; returns the final object."""
    cur: ObjectState | None = None
    for i, op in enumerate(ops):
        cur = as_state(op(kind, oid, cur, NOW), kind, oid, i + 1)
    assert cur is not None
    return cur


def statuses(obj: ObjectState) -> dict[int, tuple[str, int]]:
    return {n: (d["status"], d["rollout_percentage"]) for n, d in sorted(obj.versions.items())}


def test_create_makes_a_version_1_draft() -> None:
    obj = run(Create({**WF, "status": "active", "version": 9}))
    assert statuses(obj) == {1: ("draft", 100)}
    assert obj.versions[1]["workflow_id"] == "wf" and obj.versions[1]["name"] == "orders"
    assert obj.versions[1]["created_at"] == NOW


def test_create_conflicts_when_the_object_exists() -> None:
    with pytest.raises(Conflict, match="already exists"):
        Create(WF)("workflow", "wf", run(Create(WF)), NOW)


@pytest.mark.parametrize(
    ("kind", "oid", "doc", "error", "match"),
    [
        ("workflow", "-bad", WF, BadRequest, "invalid workflow id"),
        ("workflow", "a" * 129, WF, BadRequest, "invalid workflow id"),
        ("workflow", "has space", WF, BadRequest, "invalid workflow id"),
        ("pipeline", "wf", WF, BadRequest, "unknown kind"),
        ("workflow", "wf", [1, 2], BadRequest, "must be a JSON object"),
        ("workflow", "wf", {**WF, "workflow_id": "other"}, BadRequest, "does not match"),
    ],
)
def test_create_rejects_bad_input(kind: str, oid: str, doc: Any, error: type[QuasarError], match: str) -> None:
    with pytest.raises(error, match=match):
        Create(doc)(kind, oid, None, NOW)


def test_update_changes_only_the_draft() -> None:
    obj = run(Create(WF), Update({**WF, "name": "renamed"}))
    assert obj.versions[1]["name"] == "renamed" and obj.versions[1]["status"] == "draft"


def test_update_of_an_active_version_is_refused() -> None:
    active = run(Create(WF), Activate())
    with pytest.raises(Conflict, match="no draft to update"):
        Update(WF)("workflow", "wf", active, NOW)


def test_update_of_a_missing_object_is_not_found() -> None:
    with pytest.raises(NotFound):
        Update(WF)("workflow", "wf", None, NOW)


def test_new_version_copies_the_latest_into_a_draft() -> None:
    obj = run(Create(WF), Activate(), NewVersion())
    assert statuses(obj) == {1: ("active", 100), 2: ("draft", 100)}
    assert obj.versions[2]["name"] == "orders"


def test_a_second_draft_is_a_conflict() -> None:
    with pytest.raises(Conflict, match="already has a draft"):
        run(Create(WF), NewVersion())


def test_activate_without_a_draft_is_a_bad_request() -> None:
    with pytest.raises(BadRequest, match="no draft"):
        run(Create(WF), Activate(), Activate())


@pytest.mark.parametrize("p", [0, 101, -5, "50", 12.5, None])
def test_activate_rejects_bad_percentages(p: Any) -> None:
    with pytest.raises(BadRequest, match="rollout_percentage"):
        run(Create(WF), Activate(p))


def test_activate_at_100_archives_every_other_active_version() -> None:
    obj = run(Create(WF), Activate(), NewVersion(), Activate(30), NewVersion(), Activate(100))
    assert statuses(obj) == {1: ("archived", 0), 2: ("archived", 0), 3: ("active", 100)}


def test_activate_below_100_keeps_only_the_newest_previous_active() -> None:
    obj = run(Create(WF), Activate(), NewVersion(), Activate(30), NewVersion(), Activate(10))
    # v1 (oldest) is archived; v2 (newest previous active) gets 90; v3 gets 10. At most two active.
    assert statuses(obj) == {1: ("archived", 0), 2: ("active", 90), 3: ("active", 10)}


def test_rollout_needs_two_active_versions() -> None:
    with pytest.raises(BadRequest, match="two active versions"):
        run(Create(WF), Activate(), Rollout(50))
    with pytest.raises(BadRequest, match="two active versions"):
        run(Create(WF), Rollout(50))


def test_rollout_splits_and_100_archives_the_older() -> None:
    split = run(Create(WF), Activate(), NewVersion(), Activate(10), Rollout(60))
    assert statuses(split) == {1: ("active", 40), 2: ("active", 60)}
    full = Rollout(100)("workflow", "wf", split, NOW)
    assert statuses(as_state(full)) == {1: ("archived", 0), 2: ("active", 100)}


def test_archive_archives_every_active_version() -> None:
    obj = run(Create(WF), Activate(), NewVersion(), Activate(50), Archive())
    assert [d["status"] for d in obj.versions.values()] == ["archived", "archived"]
    with pytest.raises(BadRequest, match="no active version"):
        Archive()("workflow", "wf", obj, NOW)


def test_rollback_activates_a_copy_of_an_older_version() -> None:
    obj = run(Create(WF), Activate(), NewVersion(), Update({**WF, "name": "v2"}), Activate())
    back = as_state(Rollback(1)("workflow", "wf", obj, NOW))
    assert statuses(back) == {1: ("archived", 0), 2: ("archived", 0), 3: ("active", 100)}
    assert back.versions[3]["name"] == "orders"
    canary = as_state(Rollback(1, 25)("workflow", "wf", obj, NOW))
    assert statuses(canary) == {1: ("archived", 0), 2: ("active", 75), 3: ("active", 25)}


def test_rollback_bad_paths() -> None:
    obj = run(Create(WF), Activate(), NewVersion())
    with pytest.raises(NotFound, match="no version 7"):
        Rollback(7)("workflow", "wf", obj, NOW)
    with pytest.raises(BadRequest, match="is a draft"):
        Rollback(2)("workflow", "wf", obj, NOW)
    with pytest.raises(Conflict, match="already the only active"):
        Rollback(1)("workflow", "wf", obj, NOW)


def test_delete_returns_no_object_and_needs_an_object() -> None:
    assert Delete()("workflow", "wf", run(Create(WF)), NOW).versions is None
    with pytest.raises(NotFound):
        Delete()("workflow", "wf", None, NOW)


def test_channels_follow_the_same_lifecycle() -> None:
    ch = {"name": "orders", "channel_type": "sync", "protocol": "rest", "workflow_id": "wf"}
    obj = run(Create(ch), Activate(), NewVersion(), Activate(20), kind="channel", oid="orders")
    assert statuses(obj) == {1: ("active", 80), 2: ("active", 20)}
    assert obj.versions[2]["channel_id"] == "orders"


def test_connectors_are_active_at_once_and_updates_keep_history() -> None:
    conn = {"name": "db", "connector_type": "http", "config": {"url": "http://x"}}
    obj = run(Create(conn), Update({**conn, "config": {"url": "http://y"}}), kind="connector", oid="db")
    assert statuses(obj) == {1: ("archived", 0), 2: ("active", 100)}
    for op in (Activate(), NewVersion(), Rollout(50), Rollback(1)):
        with pytest.raises(BadRequest, match="connectors"):
            op("connector", "db", obj, NOW)


def test_put_creates_updates_and_detects_no_change() -> None:
    conn = {"name": "db", "connector_type": "http"}
    created = as_state(Put(conn)("connector", "db", None, NOW), "connector", "db")
    same = Put(conn)("connector", "db", created, NOW)
    assert same.versions == created.versions
    changed = as_state(Put({**conn, "name": "db2"})("connector", "db", created, NOW), "connector", "db")
    assert statuses(changed) == {1: ("archived", 0), 2: ("active", 100)}
    with pytest.raises(BadRequest, match="only for connectors"):
        Put(WF)("workflow", "wf", None, NOW)


@pytest.mark.parametrize(
    ("versions", "match"),
    [
        ({}, "no versions"),
        ({"x": {"status": "draft"}}, "bad version entry"),
        ({"1": {"status": "gone"}}, "invalid status"),
        ({"1": {"status": "draft"}, "2": {"status": "draft"}}, "at most one draft"),
    ],
)
def test_restore_rejects_bad_backup_entries(versions: Any, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        Restore(versions)("workflow", "wf", None, NOW)


def test_restore_sets_the_whole_object() -> None:
    change = Restore({"1": {**WF, "status": "archived"}, "2": {**WF, "status": "active"}})("workflow", "wf", None, NOW)
    assert change.versions is not None and change.versions[2]["workflow_id"] == "wf"
    assert summarize(change.versions) == {
        "1": {"status": "archived", "rollout_percentage": None},
        "2": {"status": "active", "rollout_percentage": None},
    }
