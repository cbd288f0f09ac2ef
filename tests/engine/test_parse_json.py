"""parse_json: payload (or any context value) into data[target]."""

from __future__ import annotations

from tests.engine._support import run, task, workflow


def _parse(source: str, target: str = "out") -> dict:
    return task("p", "parse_json", {"source": source, "target": target})


def test_payload_is_deep_copied_into_data_target() -> None:
    msg = run(workflow("w", _parse("payload", "order")), data={"a": {"b": 1}})
    assert msg.data == {"order": {"a": {"b": 1}}}
    msg.data["order"]["a"]["b"] = 2
    assert msg.payload == {"a": {"b": 1}}


def test_path_inside_payload() -> None:
    assert run(workflow("w", _parse("payload.a.b")), data={"a": {"b": [1]}}).data == {"out": [1]}


def test_json_string_is_parsed() -> None:
    assert run(workflow("w", _parse("payload")), data='{"x": 1}').data == {"out": {"x": 1}}


def test_string_that_is_not_json_is_kept_as_the_string() -> None:
    assert run(workflow("w", _parse("payload")), data="{not json").data == {"out": "{not json"}


def test_missing_source_writes_null() -> None:
    assert run(workflow("w", _parse("payload.nope")), data={}).data == {"out": None}


def test_context_path_source_such_as_metadata() -> None:
    msg = run(workflow("w", _parse("metadata.raw")), data={}, metadata={"raw": '{"k": 2}'})
    assert msg.data == {"out": {"k": 2}}


def test_target_is_a_literal_key_even_with_dots() -> None:
    assert run(workflow("w", _parse("payload", "x.y")), data=1).data == {"x.y": 1}


def test_parse_records_the_change_in_the_audit_trail() -> None:
    msg = run(workflow("w", _parse("payload", "o")), data={"a": 1})
    entry = msg.to_dict()["audit_trail"][0]
    assert entry["changes"] == [{"path": "data.o", "old_value": None, "new_value": {"a": 1}}]
    assert entry["status"] == 200


def test_json_nested_too_deep_inside_a_string_is_refused() -> None:
    """Issue 14 (Low): orjson parses 1024 levels but encodes 255: the reply failed later with a 500."""
    import pytest

    from app.errors import ValidationFailed
    from app.jsonlimits import MAX_JSON_DEPTH

    with pytest.raises(ValidationFailed, match="nests deeper"):
        run(workflow("w", _parse("payload")), data="[" * 600 + "]" * 600)
    fine = "[" * (MAX_JSON_DEPTH - 2) + "]" * (MAX_JSON_DEPTH - 2)
    assert isinstance(run(workflow("w", _parse("payload")), data=fine).data["out"], list)
