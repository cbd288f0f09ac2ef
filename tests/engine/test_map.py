"""map: ordered mappings, paths, null skip, root merge, failures."""

from __future__ import annotations

import pytest

from app.engine import ChannelWorkflow, Engine, Message, compile_workflow
from app.errors import EngineFailure
from tests.engine._support import mapping, parse, run, workflow


def test_mappings_see_earlier_mappings_in_the_same_task() -> None:
    msg = run(workflow("w", mapping("m", ("data.a", 2), ("data.b", {"*": [{"var": "data.a"}, 10]}))))
    assert msg.data == {"a": 2, "b": 20}


def test_later_tasks_see_earlier_tasks() -> None:
    msg = run(
        workflow("w", parse("o"), mapping("m", ("data.total", {"+": [{"var": "data.o.x"}, 1]}))),
        data={"x": 1},
    )
    assert msg.data["total"] == 2


def test_array_index_and_hash_key_paths() -> None:
    msg = run(workflow("w", mapping("m", ("data.list.1", "b"), ("data.codes.#404", "missing"))))
    assert msg.data == {"list": [None, "b"], "codes": {"404": "missing"}}


def test_null_result_writes_nothing_and_creates_no_key() -> None:
    msg = run(workflow("w", mapping("m", ("data.keep", 1), ("data.keep", {"var": "data.nope"}), ("data.new", None))))
    assert msg.data == {"keep": 1}


def test_root_path_with_object_is_a_shallow_merge() -> None:
    msg = run(workflow("w", mapping("m", ("data.a", 1), ("data", {"b": {"var": "data.a"}}))))
    assert msg.data == {"a": 1, "b": 1}


def test_metadata_and_temp_data_paths() -> None:
    msg = run(
        workflow("w", mapping("m", ("metadata.tag", "x"), ("temp_data.t", 1), ("data.t", {"var": "temp_data.t"})))
    )
    assert msg.metadata["tag"] == "x" and msg.data == {"t": 1}
    assert set(msg.to_response()) == {"id", "status", "data", "errors"}  # temp_data is never returned


def test_templating_builds_objects() -> None:
    msg = run(workflow("w", mapping("m", ("data.o", {"n": {"+": [1, 2]}, "s": "lit"}))))
    assert msg.data == {"o": {"n": 3, "s": "lit"}}


def test_copying_an_object_does_not_alias_it() -> None:
    msg = run(workflow("w", mapping("m", ("data.a", {"x": [1]}), ("data.b", {"var": "data.a"}), ("data.b.x.1", 2))))
    assert msg.data == {"a": {"x": [1]}, "b": {"x": [1, 2]}}


def test_division_by_zero_fails_the_workflow_with_500_but_applies_other_mappings() -> None:
    wf = workflow("w", mapping("m", ("data.ok", 1), ("data.bad", {"/": [1, 0]})))
    engine = Engine({"ch": [ChannelWorkflow(compile_workflow(wf))]})
    msg = Message.from_request({})
    with pytest.raises(EngineFailure) as info:
        engine.process_sync("ch", msg)
    assert info.value.status == 500 and info.value.message == "An internal engine error occurred"
    assert msg.data == {"ok": 1}


def test_failing_mapping_under_task_continue_on_error_is_recorded_quirk_5_fix() -> None:
    m = mapping("m", ("data.ok", 1), ("data.bad", {"+": ["abc", 1]}), ("data.after", 2), continue_on_error=True)
    msg = run(workflow("w", m, mapping("next", ("data.next", True))))
    assert msg.data == {"ok": 1, "after": 2, "next": True}
    assert [e["code"] for e in msg.errors] == ["TASK_ERROR"]
    assert "data.bad" in msg.errors[0]["message"] and msg.errors[0]["task_id"] == "m"
    assert [a.status for a in msg.audit_trail] == [500, 200]
