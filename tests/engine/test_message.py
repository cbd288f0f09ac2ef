"""Orion's message model and response shapes."""

from __future__ import annotations

import orjson
import pytest

from app.engine import Message
from app.errors import BadRequest


def test_request_data_becomes_payload_and_context_data_starts_empty() -> None:
    msg = Message.from_request({"a": 1}, {"source": "test"})
    assert msg.payload == {"a": 1}
    assert msg.context == {"data": {}, "metadata": {"source": "test"}, "temp_data": {}}


def test_response_shape() -> None:
    msg = Message.from_request({"a": 1}, id="m-1")
    msg.data["x"] = 1
    assert msg.to_response() == {"id": "m-1", "status": "ok", "data": {"x": 1}, "errors": []}
    assert orjson.loads(msg.response_json()) == msg.to_response()


def test_error_info_shape_has_path_null_and_omits_absent_ids() -> None:
    msg = Message.from_request({})
    msg.add_error("VALIDATION_ERROR", "bad")
    msg.add_error("TASK_ERROR", "x", workflow_id="w", task_id="t")
    first, second = msg.errors
    assert set(first) == {"code", "message", "path", "timestamp"} and first["path"] is None
    assert second["workflow_id"] == "w" and second["task_id"] == "t"


def test_to_dict_is_the_whole_message() -> None:
    msg = Message.from_request({"a": 1}, id="m")
    d = msg.to_dict()
    assert set(d) == {"id", "payload", "context", "audit_trail", "errors"}
    assert set(d["context"]) == {"data", "metadata", "temp_data"}


def test_from_json_reads_data_and_metadata() -> None:
    msg = Message.from_json(b'{"data": {"n": 1}, "metadata": {"k": "v"}}')
    assert msg.payload == {"n": 1} and msg.metadata == {"k": "v"}


@pytest.mark.parametrize("body", [b"{not json", b"[1]", b'{"data": 1, "metadata": 5}'])
def test_from_json_rejects_bad_bodies_with_bad_request(body: bytes) -> None:
    with pytest.raises(BadRequest):
        Message.from_json(body)
