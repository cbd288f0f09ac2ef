"""Dry-run: same engine, side effects recorded instead of performed, step trace."""

from __future__ import annotations

from app.engine import compile_workflow, dry_run
from tests.engine._support import mapping, parse, task, workflow


def test_trace_lists_executed_and_skipped_tasks() -> None:
    wf = workflow("w", parse("o"), mapping("big", ("data.o.big", True), condition={">": [{"var": "data.o.n"}, 5]}))
    report = dry_run(wf, {"n": 1})
    assert report["matched"] is True
    assert [(s["task_id"], s["result"]) for s in report["trace"]["steps"]] == [
        ("parse", "executed"),
        ("big", "skipped"),
    ]
    assert report["output"] == {"o": {"n": 1}} and report["errors"] == []


def test_side_effecting_functions_are_recorded_with_evaluated_inputs() -> None:
    http = task("call", "http_call", {"connector": "api", "method": "POST", "body_logic": {"var": "data.o"}})
    kafka = task("pub", "publish_kafka", {"connector": "bus", "topic": "t", "key_logic": {"var": "data.o.id"}})
    report = dry_run(workflow("w", parse("o"), http, kafka), {"id": 7})
    steps = {s["task_id"]: s for s in report["trace"]["steps"]}
    assert steps["call"]["would_call"] == {
        "function": "http_call",
        "input": {"connector": "api", "method": "POST", "body_logic": {"id": 7}},
    }
    assert steps["pub"]["would_call"]["input"]["key_logic"] == 7
    assert report["errors"] == []


def test_workflow_condition_false_is_not_matched() -> None:
    report = dry_run(workflow("w", mapping("m", ("data.a", 1)), condition=False), {})
    assert report["matched"] is False
    assert report["trace"]["steps"] == [{"workflow_id": "w", "task_id": None, "result": "skipped"}]


def test_failed_run_reports_the_error_and_partial_output() -> None:
    wf = workflow("w", mapping("m", ("data.a", 1)), task("bad", "publish_json", {"source": "x", "target": "y"}))
    report = dry_run(wf, {})
    assert report["error"]["status"] == 400 and report["output"] == {"a": 1}
    assert report["trace"]["steps"][-1]["result"] == "executed" and report["trace"]["steps"][-1]["status"] == 500


def test_filter_halt_marks_the_rest_skipped() -> None:
    wf = workflow("w", task("f", "filter", {"condition": False}), mapping("m", ("data.a", 1)))
    steps = dry_run(compile_workflow(wf), {})["trace"]["steps"]
    assert [(s["task_id"], s["result"], s.get("status")) for s in steps] == [
        ("f", "executed", 299),
        ("m", "skipped", None),
    ]
