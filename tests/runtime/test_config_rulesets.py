"""Rulesets as a config kind: fold, lifecycle, the snapshot's catalog, activation checks on calls."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import orjson
import pytest

from app.config_store.operations import Activate, Archive, Create, NewVersion, Operation, Rollback, Rollout, Update
from app.config_store.rulesets import call_problems, ruleset_catalog
from app.config_store.snapshot import build_snapshot
from app.config_store.state import ConfigState, definition_of, proposal_key
from app.engine import Message
from app.errors import BadRequest

NOW = "2025-01-01T00:00:00.000Z"
FRAUD = json.loads((Path(__file__).resolve().parents[2] / "docs/examples/rules/fraud-scoring.json").read_text())
SIGNALS, DECISION = FRAUD["rulesets"]


class Store:
    """The real fold with the real compiler (the engine), fed by the pure lifecycle operations."""

    def __init__(self) -> None:
        self.state = ConfigState()

    def op(self, kind: str, oid: str, *ops: Operation) -> Store:
        for operation in ops:
            cur = self.state.get_any(kind, oid)
            rev = cur.revision if cur else 0
            change = operation(kind, oid, cur if cur and not cur.deleted else None, NOW)
            assert change.versions is not None
            value = {
                "kind": kind,
                "id": oid,
                "op": change.op,
                "expected_revision": rev,
                "revision": rev + 1,
                "object": {"versions": {str(n): d for n, d in change.versions.items()}},
            }
            out = self.state.apply(self.state.offset + 1, proposal_key(kind, oid, rev + 1, "n"), orjson.dumps(value))
            assert out.applied, out
        return self


def doc(raw: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in copy.deepcopy(raw).items() if k != "ruleset_id"}


def fraud_store() -> Store:
    s = Store()
    s.op("ruleset", "fraud-signals", Create(doc(SIGNALS)), Activate())
    s.op("ruleset", "fraud-decision", Create(doc(DECISION)), Activate())
    s.op("workflow", "fraud-check", Create(FRAUD["workflows"][0]), Activate())
    s.op("channel", "fraud-check", Create(FRAUD["channels"][0]), Activate())
    return s


def test_rulesets_fold_and_compile_at_fold_time() -> None:
    s = fraud_store()
    obj = s.state.get("ruleset", "fraud-decision")
    assert obj is not None and obj.active == [1]
    assert obj.compiled[1].valid and obj.compiled[1].compiled.calls == (("fraud-signals", 1),)


def test_an_invalid_ruleset_is_stored_with_its_field_errors() -> None:
    s = Store().op("ruleset", "bad", Create({"name": "bad", "entry": "x", "steps": {}}))
    obj = s.state.get("ruleset", "bad")
    assert obj is not None
    assert obj.errors_of(1) == [{"field": "steps", "message": "needs at least one step"}]


def test_the_snapshot_engine_runs_rule_tasks_against_the_active_rulesets() -> None:
    snap = build_snapshot(fraud_store().state)
    message = Message.from_request(FRAUD["request"]["body"]["data"])
    snap.engine.process_sync("fraud-check", message)
    assert message.data == FRAUD["response_data"]


def test_a_new_active_version_changes_decisions_and_archived_versions_stay_callable() -> None:
    s = fraud_store()
    stricter = doc(SIGNALS)
    stricter["steps"]["score"]["table"]["rules"][3]["then"] = [40]  # medium-risk country now scores 40
    s.op("ruleset", "fraud-signals", NewVersion(), Update(stricter), Activate())
    catalog = ruleset_catalog(s.state)
    assert catalog.active_version("fraud-signals") == 2
    assert catalog.get("fraud-signals", 1) is not None  # archived, still served to its pinned callers
    assert catalog.get("fraud-signals", 1).version == 1 and catalog.get("fraud-signals", 2).version == 2
    # fraud-decision pins v1: its decisions do not move under it
    message = Message.from_request(FRAUD["request"]["body"]["data"])
    build_snapshot(s.state).engine.process_sync("fraud-check", message)
    assert message.data["fraud"]["output"] == {"score": 50}


def test_drafts_are_not_in_the_catalog() -> None:
    s = Store().op("ruleset", "fraud-signals", Create(doc(SIGNALS)))
    assert ruleset_catalog(s.state).get("fraud-signals", 1) is None
    assert ruleset_catalog(s.state).get("fraud-signals") is None


def test_active_invalid_rulesets_are_reported_as_problems() -> None:
    s = Store()
    s.state.apply(
        0,
        proposal_key("ruleset", "broken", 1, "n"),
        orjson.dumps(
            {
                "kind": "ruleset",
                "id": "broken",
                "op": "create",
                "expected_revision": 0,
                "revision": 1,
                "object": {
                    "versions": {
                        "1": {"ruleset_id": "broken", "name": "b", "status": "active", "entry": "x", "steps": {}}
                    }
                },
            }
        ),
    )
    snap = build_snapshot(s.state)
    assert [p["id"] for p in snap.problems] == ["broken"]


@pytest.mark.parametrize("op", [Activate(50), Rollback(1, 50)])
def test_rulesets_switch_versions_whole(op: Operation) -> None:
    s = Store().op("ruleset", "fraud-signals", Create(doc(SIGNALS)), Activate(), NewVersion())
    cur = s.state.get("ruleset", "fraud-signals")
    with pytest.raises(BadRequest, match="rollout_percentage must be 100"):
        op("ruleset", "fraud-signals", cur, NOW)
    with pytest.raises(BadRequest, match="must be 100"):
        Rollout(40)("ruleset", "fraud-signals", cur, NOW)


def test_activation_call_checks_against_the_folded_config() -> None:
    s = Store().op("ruleset", "fraud-decision", Create(doc(DECISION)))
    caller = s.state.get("ruleset", "fraud-decision").compiled[1].compiled  # type: ignore[union-attr]
    assert call_problems(s.state, caller)[0]["message"].startswith("calls unknown ruleset version fraud-signals v1")
    s.op("ruleset", "fraud-signals", Create(doc(SIGNALS)))
    assert "which is draft" in call_problems(s.state, caller)[0]["message"]
    s.op("ruleset", "fraud-signals", Activate())
    assert call_problems(s.state, caller) == []
    s.op("ruleset", "fraud-signals", Archive())
    assert "which is archived" in call_problems(s.state, caller)[0]["message"]


def test_the_suite_result_is_recorded_on_the_activated_version_but_not_copied() -> None:
    record = {"digest": "sha256:abc", "total": 2, "passed": 2, "failed": 0}
    s = Store().op("ruleset", "fraud-signals", Create(doc(SIGNALS)), Activate(test_suite=record), NewVersion())
    obj = s.state.get("ruleset", "fraud-signals")
    assert obj is not None
    assert obj.versions[1]["test_suite"] == record
    assert "test_suite" not in obj.versions[2]
    assert "test_suite" not in definition_of("ruleset", obj.versions[1])
