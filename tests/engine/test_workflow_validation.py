"""validate_workflow / compile_workflow: clear field errors, never a crash."""

from __future__ import annotations

from typing import Any

import pytest

from app.engine import WorkflowInvalid, compile_workflow, validate_workflow
from app.errors import ValidationFailed
from tests.engine._support import mapping, task, workflow


def _fields(doc: Any) -> list[str]:
    report = validate_workflow(doc)
    assert report["valid"] is False
    return [e["field"] for e in report["errors"]]


def test_valid_workflow() -> None:
    assert validate_workflow(workflow("w", mapping("m", ("data.a", 1)))) == {
        "valid": True,
        "errors": [],
        "warnings": [],
    }


def test_id_is_accepted_as_workflow_id() -> None:
    assert compile_workflow({"id": "hello", "name": "n", "tasks": [mapping("m", ("data.a", 1))]}).id == "hello"


def test_missing_workflow_id_gets_a_uuid() -> None:
    assert len(compile_workflow({"name": "n", "tasks": [mapping("m", ("data.a", 1))]}).id) == 36


@pytest.mark.parametrize(
    ("doc", "field"),
    [
        ({"tasks": [mapping("m", ("data.a", 1))]}, "name"),
        ({"name": "n"}, "tasks"),
        ({"name": "n", "tasks": []}, "tasks"),
        ({"name": "n", "tasks": [{"id": "t", "function": {"name": "map"}}]}, "tasks[0].name"),
        ({"name": "n", "tasks": [{"id": "t", "name": "t"}]}, "tasks[0].function"),
        ({"workflow_id": "bad id!", "name": "n", "tasks": [mapping("m", ("data.a", 1))]}, "workflow_id"),
        ({"name": "n", "priority": -1, "tasks": [mapping("m", ("data.a", 1))]}, "priority"),
    ],
)
def test_structure_errors_name_the_field(doc: dict[str, Any], field: str) -> None:
    assert field in _fields(doc)


@pytest.mark.parametrize("doc", [None, 5, "text", [1, 2]])
def test_non_object_documents_are_reported_not_raised(doc: Any) -> None:
    assert _fields(doc) == ["(document)"]


def test_duplicate_task_ids() -> None:
    assert _fields(workflow("w", mapping("a", ("data.x", 1)), mapping("a", ("data.y", 1)))) == ["tasks[1].id"]


def test_jsonlogic_compile_errors_in_conditions_and_inputs() -> None:
    doc = workflow("w", mapping("m", ("data.a", {"==": 1}), condition={"if": "x"}), condition={"<": [1]})
    assert _fields(doc) == ["condition", "tasks[0].condition", "tasks[0].function.input.mappings[0].logic"]


def test_unknown_function_lists_known_ones() -> None:
    report = validate_workflow(workflow("w", task("t", "enrich", {})))
    assert report["errors"][0]["field"] == "tasks[0].function.name"
    assert "unknown function 'enrich'" in report["errors"][0]["message"]
    assert "parse_json" in report["errors"][0]["message"]


def test_validation_rule_without_message_is_rejected_quirk_8() -> None:
    doc = workflow("w", task("v", "validation", {"rules": [{"logic": True}]}))
    assert _fields(doc) == ["tasks[0].function.input.rules[0].message"]


@pytest.mark.parametrize(
    ("function", "inp", "field"),
    [
        ("map", {}, "mappings"),
        ("map", {"mappings": [{"logic": 1}]}, "mappings[0].path"),
        ("map", {"mappings": "x"}, "mappings"),
        ("parse_json", {"source": "payload"}, "target"),
        ("parse_xml", {"target": "x"}, "source"),
        ("filter", {"condition": True, "on_reject": "drop"}, "on_reject"),
        ("filter", {}, "condition"),
        ("log", {"message": "m", "level": "loud"}, "level"),
        ("publish_json", {"source": "a", "target": "b", "pretty": "yes"}, "pretty"),
        ("http_call", {"connector": "c", "method": "post"}, "method"),
        ("http_call", {"method": "GET"}, "connector"),
        ("db_read", {"connector": "c"}, "query"),
        ("cache_write", {"connector": "c", "key": "k"}, "value"),
        ("mongo_read", {"connector": "c", "database": "d"}, "collection"),
        ("publish_kafka", {"connector": "c"}, "topic"),
        ("channel_call", {}, "channel"),
        ("map", [1], ""),
    ],
)
def test_wrong_function_input_shapes_are_field_errors(function: str, inp: Any, field: str) -> None:
    doc = workflow("w", task("t", function, inp))
    expected = "tasks[0].function.input" + (f".{field}" if field else "")
    if not isinstance(inp, dict):
        assert _fields(doc) == ["tasks[0].function.input"]
    else:
        assert _fields(doc) == [expected]


def test_connector_functions_validate_without_a_runtime() -> None:
    doc = workflow(
        "w",
        task("h", "http_call", {"connector": "api", "method": "POST", "body_logic": {"var": "data"}}),
        task("d", "db_read", {"connector": "db", "query": "select 1", "params": [{"var": "data.id"}]}),
        task("k", "publish_kafka", {"connector": "bus", "topic": "t", "key_logic": {"var": "data.id"}}),
    )
    assert validate_workflow(doc)["valid"] is True


def test_unknown_operator_is_a_warning_not_an_error() -> None:
    report = validate_workflow(workflow("w", mapping("m", ("data.a", {"frobnicate": [1]}))))
    assert report["valid"] is True
    assert "unknown operator" in report["warnings"][0]


def test_compile_workflow_raises_workflow_invalid_with_the_same_errors() -> None:
    doc = workflow("w", task("v", "validation", {"rules": [{"logic": True}]}))
    with pytest.raises(WorkflowInvalid) as info:
        compile_workflow(doc)
    assert isinstance(info.value, ValidationFailed) and info.value.status == 400
    assert info.value.errors == validate_workflow(doc)["errors"]
    assert info.value.to_body()["error"]["details"]["errors"] == info.value.errors
