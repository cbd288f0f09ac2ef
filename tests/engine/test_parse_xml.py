"""parse_xml: quick-xml mapping, with repeated elements as arrays (Quasar fix of quirk 7)."""

from __future__ import annotations

import pytest

from app.engine import ChannelWorkflow, Engine, Message, compile_workflow
from app.engine.functions.parse import xml_to_json
from app.errors import EngineFailure, ValidationFailed
from tests.engine._support import run, task, workflow

XML_TASK = task("x", "parse_xml", {"source": "payload", "target": "doc"})


def test_root_dropped_attributes_and_text() -> None:
    got = xml_to_json('<order id="7"><item sku="A">Pen</item><note/></order>')
    assert got == {"@id": "7", "item": {"@sku": "A", "$text": "Pen"}, "note": {}}


def test_text_is_always_a_string() -> None:
    assert xml_to_json("<r><n>42</n></r>") == {"n": {"$text": "42"}}


def test_repeated_siblings_become_an_array() -> None:
    assert xml_to_json("<r><i>1</i><i>2</i><i>3</i><x/></r>") == {
        "i": [{"$text": "1"}, {"$text": "2"}, {"$text": "3"}],
        "x": {},
    }


def test_parse_xml_task_writes_data_target() -> None:
    assert run(workflow("w", XML_TASK), data="<a><b>c</b></a>").data == {"doc": {"b": {"$text": "c"}}}


def _fails_with(data: object) -> ValidationFailed:
    engine = Engine({"ch": [ChannelWorkflow(compile_workflow(workflow("w", XML_TASK)))]})
    with pytest.raises(ValidationFailed) as info:
        engine.process_sync("ch", Message.from_request(data))
    return info.value


def test_malformed_xml_fails_the_request_with_400_validation_error() -> None:
    err = _fails_with("<a><b></a>")
    assert err.status == 400 and err.code == "VALIDATION_ERROR"
    assert err.message.startswith("Failed to parse XML")


@pytest.mark.parametrize("data", [{"not": "a string"}, None])
def test_non_string_or_missing_source_is_a_validation_error(data: object) -> None:
    assert _fails_with(data).status == 400


def test_malformed_xml_under_continue_on_error_records_task_error_and_continues() -> None:
    t = dict(XML_TASK, continue_on_error=True)
    msg = run(workflow("w", t, task("m", "map", {"mappings": [{"path": "data.after", "logic": 1}]})), data="<a")
    assert msg.data == {"after": 1}
    assert [e["code"] for e in msg.errors] == ["TASK_ERROR"]
    assert msg.errors[0]["message"].startswith("Task x error: Failed to parse XML")


def test_engine_failure_is_not_raised_for_xml_errors() -> None:
    assert not isinstance(_fails_with("<<"), EngineFailure)


def test_deep_xml_is_a_validation_error_not_a_crash() -> None:
    """Issue 14 (Low): deep XML overflowed the converter's recursion (500); now a clear 400."""
    import pytest

    from app.engine.functions.parse import MAX_XML_DEPTH, xml_to_json
    from app.errors import ValidationFailed

    deep = "<a>" * 5000 + "</a>" * 5000
    with pytest.raises(ValidationFailed, match="nested deeper"):
        xml_to_json(deep)
    ok = "<a>" * MAX_XML_DEPTH + "x" + "</a>" * MAX_XML_DEPTH
    assert xml_to_json(ok) is not None
