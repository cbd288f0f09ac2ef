"""log: writes a line, never changes data, never fails."""

from __future__ import annotations

import logging

import pytest

from tests.engine._support import run, task, workflow


def test_log_line_has_message_and_fields(caplog: pytest.LogCaptureFixture) -> None:
    t = task("l", "log", {"message": {"cat": ["order ", {"var": "data.id"}]}, "fields": {"n": 1, "o": {"a": 1}}})
    with caplog.at_level(logging.INFO, logger="quasar.workflow"):
        msg = run(workflow("w", task("m", "map", {"mappings": [{"path": "data.id", "logic": 5}]}), t))
    assert msg.data == {"id": 5}
    assert 'order 5 [n=1, o={"a":1}]' in caplog.messages


def test_log_never_fails_on_evaluation_errors(caplog: pytest.LogCaptureFixture) -> None:
    t = task("l", "log", {"message": {"/": [1, 0]}, "level": "error"})
    with caplog.at_level(logging.ERROR, logger="quasar.workflow"):
        msg = run(workflow("w", t))
    assert msg.errors == [] and msg.audit_trail[0].status == 200
    assert caplog.messages and caplog.messages[0].startswith("<error:")


def test_log_below_level_is_silent(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="quasar.workflow"):
        run(workflow("w", task("l", "log", {"message": "quiet", "level": "debug"})))
    assert "quiet" not in caplog.messages
