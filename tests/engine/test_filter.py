"""filter: halt (299) skips the rest of the workflow; skip (298) goes on without an audit entry."""

from __future__ import annotations

from tests.engine._support import mapping, run, task, workflow


def _filter(cond: object, on_reject: str | None = None) -> dict:
    inp: dict[str, object] = {"condition": cond}
    if on_reject:
        inp["on_reject"] = on_reject
    return task("f", "filter", inp)


def test_halt_skips_rest_of_this_workflow_but_other_workflows_run() -> None:
    a = workflow("a", _filter(False), mapping("m", ("data.a", 1)))
    b = workflow("b", mapping("m", ("data.b", 1)), priority=1)
    msg = run(a, b)
    assert msg.data == {"b": 1}
    assert msg.errors == []
    assert [(x.workflow_id, x.task_id, x.status) for x in msg.audit_trail] == [
        ("a", "f", 299),
        ("b", "m", 200),
    ]


def test_skip_continues_with_the_next_task_and_records_no_audit_entry() -> None:
    msg = run(workflow("a", _filter(False, "skip"), mapping("m", ("data.a", 1))))
    assert msg.data == {"a": 1}
    assert [x.task_id for x in msg.audit_trail] == ["m"]


def test_passing_filter_continues() -> None:
    msg = run(workflow("a", _filter({"==": [1, 1]}), mapping("m", ("data.a", 1))))
    assert msg.data == {"a": 1} and msg.audit_trail[0].status == 200


def test_evaluation_error_counts_as_reject() -> None:
    assert run(workflow("a", _filter({"/": [1, 0]}), mapping("m", ("data.a", 1)))).data == {}


def test_truthy_but_not_true_rejects() -> None:
    assert run(workflow("a", _filter(1), mapping("m", ("data.a", 1)))).data == {}
