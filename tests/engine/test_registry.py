"""Function registry, connector plug-in seam and `quasar.functions` entry points."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Any

import pytest

from app.engine import (
    ConnectorInput,
    Engine,
    FunctionInputError,
    FunctionRegistry,
    FunctionSpec,
    Message,
    RunOptions,
    SyncFunction,
    TaskContext,
    compile_workflow,
    connector_function,
    default_registry,
    validate_workflow,
)
from tests.engine._support import task, workflow

KNOWN = {
    "parse_json",
    "parse_xml",
    "map",
    "validation",
    "validate",
    "filter",
    "log",
    "publish_json",
    "publish_xml",
    "http_call",
    "db_read",
    "db_write",
    "cache_read",
    "cache_write",
    "mongo_read",
    "publish_kafka",
    "channel_call",
}


def test_default_registry_knows_orions_functions() -> None:
    reg = default_registry()
    assert set(reg.names()) >= KNOWN
    assert all(reg.get(n).side_effects for n in ("http_call", "db_write", "publish_kafka", "channel_call"))  # type: ignore[union-attr]
    assert not any(reg.get(n).side_effects for n in ("map", "log", "parse_json"))  # type: ignore[union-attr]


def test_registering_a_duplicate_name_needs_replace() -> None:
    reg = FunctionRegistry()
    spec = FunctionSpec("x", lambda inp: _Const(1))
    reg.register(spec)
    with pytest.raises(ValueError):
        reg.register(spec)
    reg.register(spec, replace=True)


class _Const(SyncFunction):
    def __init__(self, value: Any) -> None:
        self.value = value

    def run(self, message: Message, ctx: TaskContext) -> int:
        message.data["const"] = self.value
        return 200


async def test_connector_runtime_plugs_in_through_connector_function() -> None:
    seen: dict[str, Any] = {}

    async def cache_read(inp: ConnectorInput, message: Message, ctx: TaskContext) -> int:
        seen["key"] = inp.evaluate("key", message.context)
        message.data[inp.get("output", "data")] = ctx.services[seen["key"]]
        return 200

    reg = default_registry()
    reg.register(connector_function("cache_read", cache_read), replace=True)
    wf = compile_workflow(
        workflow("w", task("c", "cache_read", {"connector": "c", "key": {"cat": ["user:", 1]}, "output": "u"})),
        reg,
    )
    msg = await Engine({"ch": [wf]}).process("ch", Message.from_request({}), RunOptions(services={"user:1": "x"}))
    assert msg.data == {"u": "x"} and seen == {"key": "user:1"}


def test_db_params_and_mongo_filter_are_evaluated_as_jsonlogic_quirk_13() -> None:
    from app.engine.functions.connectors import compile_connector_input

    ctx = {"data": {"id": 4}}
    db = compile_connector_input("db_read", {"connector": "d", "query": "q", "params": [{"var": "data.id"}, "lit"]})
    assert db.params(ctx) == [4, "lit"]
    mongo = compile_connector_input(
        "mongo_read",
        {
            "connector": "m",
            "database": "d",
            "collection": "c",
            "filter": {"type": {"var": "data.id"}, "x": {"$gt": 1}},
        },
    )
    assert mongo.filter(ctx) == {"type": 4, "x": {"$gt": 1}}


def test_connector_function_rejects_unknown_names() -> None:
    async def h(inp: ConnectorInput, message: Message, ctx: TaskContext) -> int:
        return 200

    with pytest.raises(ValueError):
        connector_function("ftp_get", h)


def test_custom_function_factory_errors_become_field_errors() -> None:
    def factory(inp: Mapping[str, Any]) -> _Const:
        if "value" not in inp:
            raise FunctionInputError("value", "is required")
        return _Const(inp["value"])

    reg = default_registry()
    reg.register(FunctionSpec("const", factory))
    report = validate_workflow(workflow("w", task("t", "const", {})), reg)
    assert report["errors"] == [{"field": "tasks[0].function.input.value", "message": "is required"}]


def test_entry_points_register_custom_functions(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_quasar_plugin.py").write_text(
        "from app.engine import FunctionSpec, SyncFunction\n"
        "class Hello(SyncFunction):\n"
        "    def run(self, message, ctx):\n"
        "        message.data['hello'] = 'plugin'\n"
        "        return 200\n"
        "SPEC = FunctionSpec('hello_plugin', lambda inp: Hello())\n"
        "def broken():\n"
        "    raise RuntimeError('boom')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    eps = [
        EntryPoint("hello_plugin", "my_quasar_plugin:SPEC", "quasar.functions"),
        EntryPoint("broken", "my_quasar_plugin:broken", "quasar.functions"),
    ]
    monkeypatch.setattr("app.engine.registry.entry_points", lambda group: eps if group == "quasar.functions" else [])
    reg = FunctionRegistry()
    assert reg.load_entry_points() == ["hello_plugin"]  # the broken plugin is logged and skipped
    wf = compile_workflow(workflow("w", task("t", "hello_plugin", {})), reg)
    assert Engine({"ch": [wf]}).process_sync("ch", Message.from_request({})).data == {"hello": "plugin"}
    sys.modules.pop("my_quasar_plugin", None)
