"""app.testing: helpers users call from their own tests."""

from __future__ import annotations

import pytest

from app.errors import ValidationFailed
from app.testing import (
    assert_no_errors,
    assert_response,
    assert_steps,
    build_engine,
    dry_run,
    run_workflow,
    send,
)
from tests.engine._support import mapping, parse, task, workflow

WF = workflow("w", parse("o"), mapping("m", ("data.o.big", True), condition={">": [{"var": "data.o.n"}, 5]}))


def test_run_workflow_returns_the_response_body() -> None:
    r = run_workflow(WF, {"n": 9})
    assert_response(r, data={"o": {"n": 9, "big": True}})
    assert_response(r, data={"o": {"big": True}}, partial=True, errors=[])
    assert_no_errors(r)


def test_assertion_helpers_fail_on_mismatch() -> None:
    r = run_workflow(WF, {"n": 1})
    with pytest.raises(AssertionError):
        assert_response(r, data={"o": {"big": True}}, partial=True)
    with pytest.raises(AssertionError):
        assert_response(r, errors=["VALIDATION_ERROR"])
    with pytest.raises(AssertionError):
        assert_steps(dry_run(WF, {"n": 1}), executed=["m"])


def test_build_engine_binds_several_workflows_to_a_channel() -> None:
    a = workflow("a", mapping("m", ("data.a", 1)))
    b = workflow("b", mapping("m", ("data.b", 1)), priority=1)
    engine = build_engine([a, b], [{"name": "orders", "workflow_ids": ["a", "b"]}])
    assert send(engine, "orders", {})["data"] == {"a": 1, "b": 1}
    with pytest.raises(KeyError):
        build_engine([a], [{"name": "x", "workflow_id": "missing"}])


def test_failures_raise_the_same_errors_the_gateway_maps() -> None:
    with pytest.raises(ValidationFailed):
        run_workflow(workflow("w", task("p", "publish_json", {"source": "x", "target": "y"})), {})


def test_assert_steps_on_dry_run() -> None:
    assert_steps(dry_run(WF, {"n": 1}), executed=["parse"], skipped=["m"])
