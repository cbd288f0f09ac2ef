"""publish_json / publish_xml: serialise part of `data` into a string at `data[target]`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from app.engine.functions._inputs import as_input, opt_bool, opt_str, req_str
from app.engine.message import Message
from app.engine.paths import MISSING, compile_path, get_path
from app.engine.registry import FunctionSpec, SyncFunction, TaskContext
from app.errors import ValidationFailed

__all__ = ["PUBLISH_JSON", "PUBLISH_XML", "sanitize_xml_name", "to_xml"]


class _DataSource:
    """Orion's lookup order: a direct key of `data`, a nested path in `data`, then `data.<path>`."""

    __slots__ = ("nested", "source", "stripped")

    def __init__(self, source: str) -> None:
        self.source = source
        self.nested = compile_path(source)
        self.stripped = compile_path(source[5:]) if source.startswith("data.") else None

    def read(self, data: Any) -> Any:
        if not isinstance(data, dict):
            return MISSING
        value = data.get(self.source, MISSING)
        if value is MISSING:
            value = get_path(data, self.nested)
        if value is MISSING and self.stripped is not None:
            value = get_path(data, self.stripped)
        return value


class _Publish(SyncFunction):
    __slots__ = ("label", "source", "target")

    def __init__(self, source: str, target: str, label: str) -> None:
        self.source = _DataSource(source)
        self.target = target
        self.label = label

    def render(self, value: Any) -> str:
        raise NotImplementedError

    def run(self, message: Message, ctx: TaskContext) -> int:
        data = message.context["data"]
        value = self.source.read(data)
        if value is MISSING or value is None:
            raise ValidationFailed(f"{self.label}: Source 'data.{self.source.source}' not found or is null")
        text = self.render(value)
        old = data.get(self.target)
        data[self.target] = text
        ctx.changes = [(f"data.{self.target}", old, text)]
        return 200


class PublishJson(_Publish):
    __slots__ = ("pretty",)

    def __init__(self, source: str, target: str, pretty: bool) -> None:
        super().__init__(source, target, "PublishJson")
        self.pretty = pretty

    def render(self, value: Any) -> str:
        # Insertion order is kept (Orion builds serde_json with preserve_order).
        opts = orjson.OPT_INDENT_2 if self.pretty else 0
        return orjson.dumps(value, option=opts).decode()


def _escape(text: str) -> str:
    return (
        text.replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace('"', "&quot;")
        .replace("'", "&apos;")
    )


def sanitize_xml_name(name: str) -> str:
    """Orion's element-name rule: a leading non-letter becomes `_` (keeping it if alphanumeric)."""
    out: list[str] = []
    for i, c in enumerate(name):
        alnum = c.isascii() and c.isalnum()
        if i == 0:
            if (c.isascii() and c.isalpha()) or c == "_":
                out.append(c)
            else:
                out.append("_")
                if alnum:
                    out.append(c)
        elif alnum or c in "-_.":
            out.append(c)
        else:
            out.append("_")
    return "".join(out) or "_element"


def _scalar(value: Any) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, str):
        return _escape(value)
    return str(value)


def _content(value: Any, out: list[str]) -> None:
    if isinstance(value, dict):
        for key, val in value.items():
            name = sanitize_xml_name(key)
            out.append(f"<{name}>")
            _content(val, out)
            out.append(f"</{name}>")
    elif isinstance(value, list):
        for item in value:
            out.append("<item>")
            _content(item, out)
            out.append("</item>")
    else:
        out.append(_scalar(value))


def to_xml(value: Any, root_element: str = "root") -> str:
    """Orion's hand-rolled XML: no declaration, no whitespace, arrays as `<item>`, null as empty."""
    out = [f"<{root_element}>"]
    _content(value, out)
    out.append(f"</{root_element}>")
    return "".join(out)


class PublishXml(_Publish):
    __slots__ = ("root_element",)

    def __init__(self, source: str, target: str, root_element: str) -> None:
        super().__init__(source, target, "PublishXml")
        self.root_element = root_element

    def render(self, value: Any) -> str:
        return to_xml(value, self.root_element)


def _compile_publish_json(raw: Mapping[str, Any]) -> PublishJson:
    inp = as_input(raw)
    return PublishJson(req_str(inp, "source"), req_str(inp, "target"), opt_bool(inp, "pretty", False))


def _compile_publish_xml(raw: Mapping[str, Any]) -> PublishXml:
    inp = as_input(raw)
    root = opt_str(inp, "root_element", "root") or "root"
    return PublishXml(req_str(inp, "source"), req_str(inp, "target"), root)


PUBLISH_JSON = FunctionSpec("publish_json", _compile_publish_json, description="Serialise data to JSON text")
PUBLISH_XML = FunctionSpec("publish_xml", _compile_publish_xml, description="Serialise data to XML text")
