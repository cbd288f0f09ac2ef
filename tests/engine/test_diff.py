"""Semantic diff of two versions: tasks by id (moved is not removed + added), mappings by path, table rows by
position, and the breaking changes a reviewer must see."""

from __future__ import annotations

from typing import Any

from app.engine.diff import diff_definitions


def task(tid: str, *paths: str, cond: Any = None) -> dict[str, Any]:
    t: dict[str, Any] = {
        "id": tid,
        "name": tid,
        "function": {"name": "map", "input": {"mappings": [{"path": p, "logic": 1} for p in paths]}},
    }
    if cond is not None:
        t["condition"] = cond
    return t


def wf(*tasks: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {"name": "w", "tasks": list(tasks), "version": 1, "status": "active", **extra}


def test_identical_versions_have_no_changes() -> None:
    d = diff_definitions("workflow", wf(task("a", "data.x")), {**wf(task("a", "data.x")), "version": 2})
    assert d.to_json() == {"summary": {"changes": 0, "breaking": 0}, "changes": [], "breaking": []}


def test_tasks_are_matched_by_id() -> None:
    before = wf(task("a", "data.x"), task("b", "data.y"), task("c", "data.z"))
    after = wf(task("c", "data.z"), task("a", "data.x"), task("b", "data.y", "data.w"), task("d", "data.v"))
    changes = {(c["path"], c["change"]) for c in diff_definitions("workflow", before, after).to_json()["changes"]}
    assert ("tasks[d]", "added") in changes
    assert ("tasks[b].function.input.mappings[data.w]", "added") in changes
    assert ("tasks[c]", "moved") in changes
    assert not any(c == "removed" for _, c in changes)


def test_changed_condition_shows_both_sides() -> None:
    before = wf(task("a", "data.x", cond={">": [{"var": "data.amount"}, 100]}))
    after = wf(task("a", "data.x", cond={">": [{"var": "data.amount"}, 500]}))
    [change] = diff_definitions("workflow", before, after).to_json()["changes"]
    assert change["path"] == "tasks[a].condition.>"
    assert change["before"][1] == 100 and change["after"][1] == 500


def test_removed_output_field_is_breaking() -> None:
    d = diff_definitions("workflow", wf(task("a", "data.x", "data.y")), wf(task("a", "data.x")))
    assert d.breaking == ["no longer writes data.y: consumers reading it will not find it"]


def test_table_rows_by_position() -> None:
    table = {"id": "t", "name": "t", "function": {"name": "decision_table", "input": {"rules": None, "rows": [
        {"when": [">= 500"], "then": ["gold"]}, {"when": ["-"], "then": ["basic"]}]}}}  # fmt: skip
    changed = {**table, "function": {**table["function"], "input": {"rows": [
        {"when": [">= 700"], "then": ["gold"]}, {"when": ["-"], "then": ["basic"]}]}}}  # fmt: skip
    changes = diff_definitions("workflow", wf(table), wf(changed)).to_json()["changes"]
    assert {"path": "tasks[t].function.input.rows[0].when", "change": "changed", "before": [">= 500"],
            "after": [">= 700"]} in changes  # fmt: skip


def test_ruleset_codes_and_channel_contract() -> None:
    before = {"steps": [{"id": "ok", "kind": "terminal", "code": "APPROVED"},
                        {"id": "no", "kind": "terminal", "code": "DECLINED"}]}  # fmt: skip
    after = {"steps": [{"id": "ok", "kind": "terminal", "code": "APPROVED"},
                       {"id": "rv", "kind": "terminal", "code": "REVIEW"}],
             "contract": {"codes": ["APPROVED", "DECLINED"]}}  # fmt: skip
    breaking = diff_definitions("ruleset", before, after).breaking
    assert "no longer returns code 'DECLINED'" in breaking
    assert "returns code 'REVIEW', outside the declared contract.codes" in breaking
    ch_before = {"contract": {"input_schema": {"required": ["id"]}}}
    ch_after = {"contract": {"input_schema": {"required": ["id", "amount"]}}}
    assert diff_definitions("channel", ch_before, ch_after).breaking == [
        "input field 'amount' becomes required: callers that omit it are refused"
    ]
