"""publish_json / publish_xml."""

from __future__ import annotations

import pytest

from app.engine import ChannelWorkflow, Engine, Message, compile_workflow
from app.engine.functions.publish import sanitize_xml_name, to_xml
from app.errors import ValidationFailed
from tests.engine._support import parse, run, task, workflow


def _pub(name: str, **inp: object) -> dict:
    return task("pub", name, {"source": "o", "target": "out", **inp})


def test_publish_json_compact_in_insertion_order() -> None:
    msg = run(workflow("w", parse("o"), _pub("publish_json")), data={"z": 1, "a": [1, {"b": None}]})
    assert msg.data["out"] == '{"z":1,"a":[1,{"b":null}]}'


def test_publish_json_pretty_uses_two_spaces() -> None:
    msg = run(workflow("w", parse("o"), _pub("publish_json", pretty=True)), data={"a": 1})
    assert msg.data["out"] == '{\n  "a": 1\n}'


def test_publish_json_scalar_string_keeps_quotes() -> None:
    assert run(workflow("w", parse("o"), _pub("publish_json")), data="hi").data["out"] == '"hi"'


@pytest.mark.parametrize("source", ["o.inner", "data.o.inner"])
def test_publish_source_may_be_a_nested_or_data_prefixed_path(source: str) -> None:
    t = task("pub", "publish_json", {"source": source, "target": "out"})
    assert run(workflow("w", parse("o"), t), data={"inner": [1]}).data["out"] == "[1]"


@pytest.mark.parametrize(("name", "label"), [("publish_json", "PublishJson"), ("publish_xml", "PublishXml")])
@pytest.mark.parametrize("payload", [None, {}])
def test_missing_or_null_source_is_a_400_validation_error(name: str, label: str, payload: object) -> None:
    wf = workflow("w", parse("o"), task("pub", name, {"source": "o.missing" if payload == {} else "o", "target": "x"}))
    engine = Engine({"ch": [ChannelWorkflow(compile_workflow(wf))]})
    with pytest.raises(ValidationFailed) as info:
        engine.process_sync("ch", Message.from_request(payload))
    assert info.value.status == 400 and info.value.message.startswith(f"{label}: Source 'data.o")


def test_publish_xml_format() -> None:
    value = {"id": 7, "ok": True, "none": None, "tags": ["a", "b"], "txt": "<&>\"'"}
    assert to_xml(value, "order") == (
        "<order><id>7</id><ok>true</ok><none></none><tags><item>a</item><item>b</item></tags>"
        "<txt>&lt;&amp;&gt;&quot;&apos;</txt></order>"
    )


def test_publish_xml_top_level_array_and_default_root() -> None:
    assert to_xml([1, 2]) == "<root><item>1</item><item>2</item></root>"


@pytest.mark.parametrize(
    ("name", "expected"),
    [("1abc", "_1abc"), ("-x", "_x"), ("a b", "a_b"), ("a-b.c", "a-b.c"), ("", "_element")],
)
def test_xml_name_sanitising(name: str, expected: str) -> None:
    assert sanitize_xml_name(name) == expected


def test_publish_xml_task() -> None:
    msg = run(workflow("w", parse("o"), _pub("publish_xml", root_element="doc")), data={"a": 1})
    assert msg.data["out"] == "<doc><a>1</a></doc>"
