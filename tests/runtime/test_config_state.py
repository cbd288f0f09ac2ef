"""The config fold (`app.config_store.state`): pure, deterministic, compaction-safe, never crashes."""

from __future__ import annotations

import random
import uuid
from collections.abc import Mapping
from typing import Any

import orjson
import pytest

from app.config_store.operations import Activate, Create, Delete, NewVersion, Operation, Rollout, Update
from app.config_store.state import CompileResult, ConfigState, ObjectState, proposal_key
from app.engine.jsonlogic import LogicCompileError, compile_logic

NOW = "2025-01-01T00:00:00.000Z"


def jsonlogic_compiler(kind: str, object_id: str, definition: Mapping[str, Any]) -> CompileResult:
    """A small real compiler: workflow conditions (and task conditions) through the engine's JSONLogic."""
    if kind != "workflow":
        return CompileResult(compiled=(kind, object_id))
    errors = []
    try:
        compile_logic(definition.get("condition", True))
    except LogicCompileError as exc:
        errors.append({"field": "condition", "message": str(exc)})
    for i, task in enumerate(definition.get("tasks", [])):
        try:
            compile_logic(task.get("condition", True))
        except LogicCompileError as exc:
            errors.append({"field": f"tasks[{i}].condition", "message": str(exc)})
    return CompileResult(errors=tuple(errors)) if errors else CompileResult(compiled=("wf", object_id))


def record(kind: str, oid: str, expected: int, versions: Mapping[int, Any] | None, op: str = "x") -> tuple[str, bytes]:
    key = proposal_key(kind, oid, expected + 1, uuid.uuid4().hex[:8])
    value = {
        "kind": kind,
        "id": oid,
        "op": op,
        "expected_revision": expected,
        "revision": expected + 1,
        "actor": "test",
        "ts": 0,
        "object": None if versions is None else {"versions": {str(n): d for n, d in versions.items()}},
    }
    return key, orjson.dumps(value)


class Log:
    """Builds a config log by running real lifecycle operations against the fold (like a writer)."""

    def __init__(self) -> None:
        self.state = ConfigState(compiler=jsonlogic_compiler)
        self.records: list[tuple[int, str, bytes | None]] = []

    def append(self, key: str, value: bytes | None) -> Any:
        offset = len(self.records)
        self.records.append((offset, key, value))
        return self.state.apply(offset, key, value)

    def op(self, kind: str, oid: str, operation: Operation, *, expected: int | None = None) -> Any:
        cur = self.state.get_any(kind, oid)
        revision = cur.revision if cur else 0
        change = operation(kind, oid, cur if cur and not cur.deleted else None, NOW)
        return self.append(*record(kind, oid, revision if expected is None else expected, change.versions, change.op))


WF = {"name": "orders", "condition": True, "tasks": [{"id": "t1", "name": "t1", "function": {"name": "log"}}]}


def fold(records: list[tuple[int, str, bytes | None]]) -> ConfigState:
    state = ConfigState(compiler=jsonlogic_compiler)
    for offset, key, value in records:
        state.apply(offset, key, value)
    return state


def busy_log(seed: int) -> Log:
    """A log with several objects, rival (stale) proposals, deletes and re-creates."""
    rnd = random.Random(seed)
    log = Log()
    for oid in ("a", "b", "c"):
        log.op("workflow", oid, Create(WF))
    for _ in range(40):
        oid = rnd.choice(["a", "b", "c"])
        cur = log.state.get("workflow", oid)
        choices: list[Operation]
        if cur is None:
            choices = [Create({**WF, "name": f"n{rnd.random()}"})]
        elif cur.draft is not None:
            choices = [Update({**WF, "name": f"n{rnd.random()}"}), Activate(rnd.choice([10, 50, 100]))]
        else:
            choices = [NewVersion(), Delete()] + ([Rollout(rnd.choice([30, 100]))] if len(cur.active) == 2 else [])
        operation = rnd.choice(choices)
        log.op("workflow", oid, operation)
        if rnd.random() < 0.3 and cur is not None:
            # A rival writer that read the state before the last write: its proposal must be rejected.
            rival = Update({**WF, "name": "rival"}) if cur.draft is not None else NewVersion()
            change = rival("workflow", oid, cur, NOW)
            assert log.append(*record("workflow", oid, cur.revision, change.versions)).status == "rejected"
    return log


def test_fold_is_deterministic_for_the_same_log() -> None:
    log = busy_log(1)
    assert fold(log.records).fingerprint() == log.state.fingerprint()
    assert fold(log.records).fingerprint() == fold(log.records).fingerprint()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_compacted_log_folds_to_the_same_state(seed: int) -> None:
    log = busy_log(seed)
    # What compaction leaves after writers' GC: only each object's latest accepted proposal.
    latest = {o.key for o in (log.state.get_any("workflow", i) for i in "abc") if o is not None}
    compacted = [r for r in log.records if r[1] in latest]
    assert len(compacted) == len(latest) < len(log.records)
    assert fold(compacted).fingerprint() == log.state.fingerprint()
    # Any partially compacted log that still holds the latest accepted proposals ends the same way.
    rnd = random.Random(seed)
    partial = [r for r in log.records if r[1] in latest or rnd.random() < 0.5]
    assert fold(partial).fingerprint() == log.state.fingerprint()


def test_stale_proposal_is_rejected_and_changes_nothing() -> None:
    log = Log()
    log.op("workflow", "a", Create(WF))
    before = log.state.fingerprint()
    out = log.op("workflow", "a", Update({**WF, "name": "late"}), expected=0)
    assert (out.status, out.kind, out.id) == ("rejected", "workflow", "a")
    assert "stale" in out.reason
    assert log.state.fingerprint() == before
    assert log.state.get("workflow", "a").versions[1]["name"] == "orders"


def test_two_rivals_on_the_same_revision_exactly_one_wins() -> None:
    log = Log()
    log.op("workflow", "a", Create(WF))
    cur = log.state.get("workflow", "a")
    first = Update({**WF, "name": "first"})("workflow", "a", cur, NOW)
    second = Update({**WF, "name": "second"})("workflow", "a", cur, NOW)
    outs = [log.append(*record("workflow", "a", cur.revision, c.versions)) for c in (first, second)]
    assert [o.status for o in outs] == ["applied", "rejected"]
    assert log.state.get("workflow", "a").versions[1]["name"] == "first"


def test_tombstones_and_markers_are_noops() -> None:
    log = Log()
    out = log.op("workflow", "a", Create(WF))
    before = log.state.fingerprint()
    generation = log.state.generation
    assert log.append(out.key, None).reason == "tombstone"  # GC of the live proposal's key itself
    assert log.append("__marker__/abc", b"x").reason == "marker"
    assert log.state.fingerprint() == before
    assert log.state.generation == generation
    assert log.state.offset == 2


def test_delete_removes_the_object_but_keeps_its_revision() -> None:
    log = Log()
    log.op("workflow", "a", Create(WF))
    cur = log.state.get("workflow", "a")
    assert log.op("workflow", "a", Delete()).status == "applied"
    assert log.state.get("workflow", "a") is None
    assert log.state.revision_of("workflow", "a") == 2
    assert log.state.objects("workflow") == []
    # A proposal made before the delete stays stale.
    change = Update({**WF, "name": "zombie"})("workflow", "a", cur, NOW)
    assert log.append(*record("workflow", "a", 1, change.versions)).status == "rejected"
    # Re-create after the delete starts over at version 1.
    assert log.op("workflow", "a", Create(WF)).status == "applied"
    assert log.state.get("workflow", "a").by_status("draft") == [1]


def test_history_of_all_versions_is_kept() -> None:
    log = Log()
    log.op("workflow", "a", Create(WF))
    log.op("workflow", "a", Activate())
    for name in ("v2", "v3"):
        log.op("workflow", "a", NewVersion())
        log.op("workflow", "a", Update({**WF, "name": name}))
        log.op("workflow", "a", Activate())
    obj = log.state.get("workflow", "a")
    assert {n: (d["name"], d["status"]) for n, d in obj.versions.items()} == {
        1: ("orders", "archived"),
        2: ("v2", "archived"),
        3: ("v3", "active"),
    }


def test_invalid_definition_is_recorded_not_raised() -> None:
    log = Log()
    bad = {**WF, "condition": {"==": [1]}}  # `==` needs two arguments: a compile error
    out = log.op("workflow", "bad", Create(bad))
    assert out.status == "applied"
    obj = log.state.get("workflow", "bad")
    assert not obj.compiled[1].valid
    assert obj.errors_of(1)[0]["field"] == "condition"
    assert obj.to_json()["invalid"]["1"]


def test_compiler_exception_becomes_an_invalid_version() -> None:
    def broken(kind: str, oid: str, definition: Mapping[str, Any]) -> CompileResult:
        raise RuntimeError("compiler bug")

    state = ConfigState(compiler=broken)
    out = state.apply(0, *record("workflow", "a", 0, {1: {**WF, "status": "draft"}}))
    assert out.status == "applied"
    assert "compiler bug" in state.get("workflow", "a").errors_of(1)[0]["message"]


def test_unchanged_definitions_are_not_recompiled() -> None:
    calls: list[str] = []

    def counting(kind: str, oid: str, definition: Mapping[str, Any]) -> CompileResult:
        calls.append(definition["name"])
        return CompileResult(compiled=object())

    state = ConfigState(compiler=counting)
    state.apply(0, *record("workflow", "a", 0, {1: {**WF, "status": "draft"}}))
    state.apply(1, *record("workflow", "a", 1, {1: {**WF, "status": "active", "updated_at": "later"}}))
    state.apply(
        2,
        *record(
            "workflow",
            "a",
            2,
            {1: {**WF, "status": "archived"}, 2: {**WF, "name": "two", "status": "active"}},
        ),
    )
    assert calls == ["orders", "two"]


def _bad(kind: str = "workflow", oid: str = "a", **changes: Any) -> tuple[str, bytes]:
    value = {
        "kind": kind,
        "id": oid,
        "op": "x",
        "expected_revision": 0,
        "revision": 1,
        "actor": "t",
        "ts": 0,
        "object": {"versions": {"1": {"status": "draft"}}},
    }
    value.update(changes)
    return proposal_key(kind, oid, 1, "n"), orjson.dumps(value)


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (None, b"{}", "no key"),
        (b"\xff\xfe", b"{}", "not UTF-8"),
        ("workflow/a#1.n", b"not json", "not JSON"),
        ("workflow/a#1.n", b"[1]", "not a JSON object"),
        ("nonsense", b"{}", "key is not"),
        ("workflow/a#1.n", _bad(kind="pipeline")[1], "unknown kind"),
        ("workflow/b#1.n", _bad()[1], "does not match"),
        (*_bad(revision=5), "does not match"),
        ("workflow/a#5.n", _bad(revision=5)[1], "expected_revision + 1"),
        (*_bad(expected_revision="0"), "must be integers"),
        (*_bad(object={"versions": {"one": {"status": "draft"}}}), "positive integer"),
        (*_bad(object={"versions": {"²": {"status": "draft"}}}), "positive integer"),  # isdigit() but not int()
        (*_bad(object={"versions": {"9" * 5000: {"status": "draft"}}}), "positive integer"),  # int() refuses
        (*_bad(object={"versions": {"1": {"status": "live"}}}), "invalid status"),
        (
            *_bad(object={"versions": {"1": {"status": "draft"}, "2": {"status": "draft"}}}),
            "more than one draft",
        ),
        (*_bad(object={"versions": {str(i): {"status": "active"} for i in (1, 2, 3)}}), "two active"),
        (*_bad(object={"versions": {}}), "no versions"),
        (*_bad(object=[1]), "object must be"),
        (*_bad(op=3), "op must be"),
    ],
)
def test_malformed_records_are_ignored_with_a_reason(key: Any, value: bytes, reason: str) -> None:
    state = ConfigState(compiler=jsonlogic_compiler)
    out = state.apply(7, key, value)
    assert out.status == "ignored"
    assert reason in out.reason
    assert state.objects() == [] and state.generation == 0 and state.offset == 7


def test_invalid_object_id_in_a_record_is_ignored() -> None:
    value = orjson.dumps(
        {"kind": "workflow", "id": "-bad", "op": "x", "expected_revision": 0, "revision": 1, "object": None}
    )
    assert "invalid id" in ConfigState().apply(0, "workflow/-bad#1.n", value).reason


def test_object_state_helpers() -> None:
    obj = ObjectState(
        "workflow",
        "a",
        3,
        {1: {"status": "archived"}, 2: {"status": "active"}, 3: {"status": "active"}, 4: {"status": "draft"}},
        {},
        "k",
        0,
    )
    assert (obj.active, obj.draft, obj.latest) == ([3, 2], 4, 4)
