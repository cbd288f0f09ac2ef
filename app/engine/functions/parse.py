"""parse_json and parse_xml: bring the payload (or any context value) into `data[target]`."""

from __future__ import annotations

import contextlib
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

import orjson

from app.engine.functions._inputs import as_input, req_str
from app.engine.message import Message
from app.engine.paths import MISSING, PathPart, clone, compile_path, get_path
from app.engine.registry import FunctionSpec, SyncFunction, TaskContext
from app.errors import ValidationFailed
from app.jsonlimits import MAX_JSON_DEPTH, json_too_deep

__all__ = ["MAX_XML_DEPTH", "PARSE_JSON", "PARSE_XML", "xml_to_json"]

MAX_XML_DEPTH = MAX_JSON_DEPTH // 2  # an element can become two JSON levels (object + sibling array)


class _Source:
    """Where `source` reads from: the payload (or a path in it), else a context path."""

    __slots__ = ("in_payload", "parts")

    def __init__(self, source: str) -> None:
        self.parts: tuple[PathPart, ...]
        if source == "payload":
            self.in_payload, self.parts = True, ()
        elif source.startswith("payload."):
            self.in_payload, self.parts = True, compile_path(source[len("payload.") :])
        else:
            self.in_payload, self.parts = False, compile_path(source)

    def read(self, message: Message) -> Any:
        root = message.payload if self.in_payload else message.context
        parts: tuple[PathPart, ...] = self.parts
        return get_path(root, parts) if parts else root


class ParseJson(SyncFunction):
    __slots__ = ("source", "target", "target_path")

    def __init__(self, source: str, target: str) -> None:
        self.source = _Source(source)
        self.target = target
        self.target_path = f"data.{target}"

    def run(self, message: Message, ctx: TaskContext) -> int:
        value = self.source.read(message)
        if value is MISSING:
            value = None  # Orion writes null for a missing source (quirk 6, kept)
        elif isinstance(value, str):
            # Orion keeps a string that is not JSON as the string itself.
            with contextlib.suppress(orjson.JSONDecodeError):
                text = value
                value = orjson.loads(text)
                if json_too_deep(text.encode(), value):
                    # orjson parses 1024 levels but encodes 255: the reply would fail with a 500.
                    raise ValidationFailed(f"parse_json: the JSON text nests deeper than {MAX_JSON_DEPTH} levels")
        else:
            value = clone(value)  # the payload stays immutable
        data = message.context["data"]
        if not isinstance(data, dict):
            message.context["data"] = data = {}
        old = data.get(self.target)
        data[self.target] = value  # `target` is a literal key, as in Orion
        ctx.changes = [(self.target_path, old, value)]
        return 200


def _compile_parse_json(raw: Mapping[str, Any]) -> ParseJson:
    inp = as_input(raw)
    return ParseJson(req_str(inp, "source"), req_str(inp, "target"))


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[1] if tag.startswith("{") else tag


def _element(el: ET.Element) -> Any:
    node: dict[str, Any] = {}
    for name, value in el.attrib.items():
        node["@" + _local(name)] = value
    texts: list[str] = []
    if el.text and el.text.strip():
        texts.append(el.text.strip())
    children: dict[str, list[Any]] = {}
    for child in el:
        children.setdefault(_local(child.tag), []).append(_element(child))
        if child.tail and child.tail.strip():
            texts.append(child.tail.strip())
    for key, items in children.items():
        # Quasar fix of Orion quirk 7: repeated siblings become an array instead of last-wins.
        node[key] = items[0] if len(items) == 1 else items
    if texts:
        node["$text"] = " ".join(texts)
    return node


def xml_to_json(text: str) -> Any:
    """Orion's quick-xml mapping: root name dropped, `@attr`, `$text`, `{}` for empty elements.

    Raises `ValidationFailed("Failed to parse XML: ...")` on malformed input.
    """
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ValidationFailed(f"Failed to parse XML: {exc}") from exc
    # Each level becomes an object (and repeated siblings an array) of the JSON result; too deep a tree
    # used to overflow the recursion below or the reply's encoder (500).
    stack = [(root, 1)]
    while stack:
        el, depth = stack.pop()
        if depth > MAX_XML_DEPTH:
            raise ValidationFailed(f"Failed to parse XML: nested deeper than {MAX_XML_DEPTH} elements")
        stack.extend((child, depth + 1) for child in el)
    return _element(root)


class ParseXml(SyncFunction):
    __slots__ = ("source", "source_name", "target")

    def __init__(self, source: str, target: str) -> None:
        self.source = _Source(source)
        self.source_name = source
        self.target = target

    def run(self, message: Message, ctx: TaskContext) -> int:
        value = self.source.read(message)
        if value is MISSING or value is None:
            raise ValidationFailed(f"parse_xml: source '{self.source_name}' not found")
        if not isinstance(value, str):
            raise ValidationFailed(f"parse_xml: source '{self.source_name}' must be a string of XML")
        parsed = xml_to_json(value)
        data = message.context["data"]
        if not isinstance(data, dict):
            message.context["data"] = data = {}
        old = data.get(self.target)
        data[self.target] = parsed
        ctx.changes = [(f"data.{self.target}", old, parsed)]
        return 200


def _compile_parse_xml(raw: Mapping[str, Any]) -> ParseXml:
    inp = as_input(raw)
    return ParseXml(req_str(inp, "source"), req_str(inp, "target"))


PARSE_JSON = FunctionSpec("parse_json", _compile_parse_json, description="Parse JSON into data[target]")
PARSE_XML = FunctionSpec("parse_xml", _compile_parse_xml, description="Parse XML into data[target]")
