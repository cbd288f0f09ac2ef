"""JSON Schemas of the built-in task functions' `input` (what `GET /api/v1/admin/functions` lists).

Descriptive: the functions' own compile step is what checks an input (`FunctionInputError`). A plugin
function may carry its own schema (`FunctionSpec.input_schema`); one without gets `{"type": "object"}`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["INPUT_SCHEMAS", "input_schema_of"]

_LOGIC: dict[str, Any] = {"description": "JSONLogic expression (or a literal)"}
_STR: dict[str, Any] = {"type": "string"}
_PATH: dict[str, Any] = {"type": "string", "description": "context path, e.g. data.order"}


def _obj(required: list[str], **props: Any) -> dict[str, Any]:
    return {"type": "object", "required": required, "properties": props}


_PARSE = _obj(
    ["source", "target"],
    source={"type": "string", "description": "payload, or a context path"},
    target={"type": "string", "description": "key under data"},
)
_CONNECTOR = {"type": "string", "description": "connector name"}

INPUT_SCHEMAS: dict[str, dict[str, Any]] = {
    "parse_json": _PARSE,
    "parse_xml": _PARSE,
    "filter": _obj(["condition"], condition=_LOGIC, on_reject={"enum": ["halt", "skip"], "default": "halt"}),
    "map": _obj(
        ["mappings"],
        mappings={
            "type": "array",
            "items": _obj(["path", "logic"], path=_PATH, logic=_LOGIC),
        },
    ),
    "validation": _obj(
        ["rules"],
        rules={"type": "array", "items": _obj(["logic", "message"], logic=_LOGIC, message=_STR, path=_PATH)},
    ),
    "log": _obj(
        ["message"],
        message=_LOGIC,
        level={"enum": ["trace", "debug", "info", "warn", "warning", "error"], "default": "info"},
        fields={"type": "object", "additionalProperties": _LOGIC},
    ),
    "publish_json": _obj(["source", "target"], source=_PATH, target=_PATH, pretty={"type": "boolean"}),
    "publish_xml": _obj(["source", "target"], source=_PATH, target=_PATH, root_element=_STR),
    "http_call": _obj(
        ["connector"],
        connector=_CONNECTOR,
        method={"enum": ["GET", "POST", "PUT", "PATCH", "DELETE"], "description": "default: connector's, else GET"},
        path=_STR,
        path_logic=_LOGIC,
        headers={"type": "object", "additionalProperties": _STR},
        body={},
        body_logic=_LOGIC,
        response_path=_PATH,
        timeout_ms={"type": "integer", "minimum": 1},
    ),
    "channel_call": _obj(
        ["channel"],
        channel=_STR,
        channel_logic=_LOGIC,
        data={},
        data_logic=_LOGIC,
        response_path=_PATH,
        timeout_ms={"type": "integer", "minimum": 1},
    ),
    "db_read": _obj(["connector", "query"], connector=_CONNECTOR, query=_STR, params={"type": "array"}, output=_PATH),
    "db_write": _obj(["connector", "query"], connector=_CONNECTOR, query=_STR, params={"type": "array"}, output=_PATH),
    "cache_read": _obj(["connector", "key"], connector=_CONNECTOR, key=_LOGIC, output=_PATH),
    "cache_write": _obj(
        ["connector", "key", "value"],
        connector=_CONNECTOR,
        key=_LOGIC,
        value=_LOGIC,
        ttl_secs={"type": "integer", "minimum": 0},
    ),
    "mongo_read": _obj(
        ["connector", "database", "collection"],
        connector=_CONNECTOR,
        database=_STR,
        collection=_STR,
        filter={"type": "object", "additionalProperties": _LOGIC},
        output=_PATH,
    ),
    "publish_kafka": _obj(
        ["connector", "topic"], connector=_CONNECTOR, topic=_STR, key_logic=_LOGIC, value_logic=_LOGIC
    ),
}
INPUT_SCHEMAS["validate"] = INPUT_SCHEMAS["validation"]


def input_schema_of(name: str, declared: Any = None) -> dict[str, Any]:
    """The function's input schema: its own declared one, the built-in one, else any object."""
    if isinstance(declared, dict):
        return declared
    return INPUT_SCHEMAS.get(name, {"type": "object"})
