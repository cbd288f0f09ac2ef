"""validation / validate: strict-true rules, VALIDATION_ERROR entries, the pipeline continues."""

from __future__ import annotations

import pytest

from tests.engine._support import mapping, parse, run, task, workflow


def _rules(*rules: tuple[object, str]) -> list[dict[str, object]]:
    return [{"logic": lg, "message": m} for lg, m in rules]


@pytest.mark.parametrize("name", ["validation", "validate"])
def test_failed_rules_are_recorded_and_later_tasks_still_run(name: str) -> None:
    v = task("v", name, {"rules": _rules(({">": [{"var": "data.o.n"}, 5]}, "n too small"), (True, "never"))})
    msg = run(workflow("w", parse("o"), v, mapping("after", ("data.after", 1))), data={"n": 1})
    assert msg.data["after"] == 1
    assert [(e["code"], e["message"], e["path"]) for e in msg.errors] == [("VALIDATION_ERROR", "n too small", None)]
    assert "task_id" not in msg.errors[0] and "workflow_id" not in msg.errors[0]
    assert [a.status for a in msg.audit_trail] == [200, 400, 200]


def test_rule_must_be_exactly_true() -> None:
    v = task("v", "validation", {"rules": _rules((1, "truthy is not enough"), ("true", "string is not enough"))})
    assert [e["message"] for e in run(workflow("w", v)).errors] == [
        "truthy is not enough",
        "string is not enough",
    ]


def test_rule_evaluation_error_records_evaluation_error() -> None:
    v = task("v", "validation", {"rules": _rules(({"/": [1, 0]}, "div"))})
    assert [e["code"] for e in run(workflow("w", v)).errors] == ["EVALUATION_ERROR"]


def test_passing_rules_record_nothing() -> None:
    v = task("v", "validation", {"rules": _rules((True, "ok"))})
    msg = run(workflow("w", v))
    assert msg.errors == [] and msg.audit_trail[0].status == 200
