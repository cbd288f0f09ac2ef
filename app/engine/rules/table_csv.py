"""Decision tables as CSV, so they can live in spreadsheets and git.

One header row; columns are `input:<expression>`, `output:<path>` (each optionally followed by a
type in parentheses, `input:data.weight (number)`), and an optional `description` column. The
column's name is the last segment of its path. Every other row is a rule: input cells in the cell
syntax of `cells.py`, output cells as literals (a bare word is a string, `"..."` quotes one that
would read as a number, `{...}` is JSONLogic), empty output = null.

Table-level settings (name, hit policy, aggregation, default, target) do not fit in CSV: they come
from `base` (an existing table document), whose inputs/outputs also provide JSONLogic expressions
for columns named `input:<name>`.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Mapping
from typing import Any

import orjson

from app.engine.rules.cells import COLUMN_TYPES, CellError, parse_literal
from app.engine.rules.table import TableInvalid

__all__ = ["table_from_csv", "table_to_csv"]

_HEADER = re.compile(r"^(input|output):\s*(.+?)\s*(?:\((\w+)\))?\s*$", re.I)
_AMBIGUOUS = re.compile(r"^(-?[\d.].*|true|false|null|-|)$")


def _column(kind: str, spec: str, type_: str | None, base: Mapping[str, Any]) -> dict[str, Any]:
    known = {c.get("name"): c for c in base.get(f"{kind}s", []) if isinstance(c, Mapping)}
    name = spec.rsplit(".", 1)[-1]
    col: dict[str, Any] = dict(known.get(spec) or known.get(name) or {})
    col["name"] = col.get("name") or name
    if kind == "input":
        if "expression" not in col and "path" not in col:
            col["expression"] = spec if "." in spec else f"data.{spec}"
    elif "path" not in col:
        col["path"] = spec if "." in spec else f"data.{spec}"
    if type_:
        col["type"] = type_.lower()
    return col


def _output_cell(text: str) -> Any:
    text = text.strip()
    if not text:
        return None
    if text.startswith(("{", "[")):
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            raise CellError(f"bad JSON {text!r}: {exc}") from None
    return parse_literal(text)


def table_from_csv(text: str, base: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A table document from CSV text (`base` supplies the table-level settings); raises `TableInvalid`."""
    base = dict(base or {})
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise TableInvalid([{"field": "csv", "message": "empty CSV: expected a header row"}])
    header, body = rows[0], rows[1:]
    errors: list[dict[str, str]] = []
    layout: list[tuple[str, int]] = []  # ("input" | "output" | "description" | "skip", column index)
    inputs: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for i, cell in enumerate(header):
        cell = cell.strip()
        if cell.lower() == "description":
            layout.append(("description", i))
            continue
        m = _HEADER.match(cell)
        if m is None:
            errors.append(
                {
                    "field": f"csv.header[{i}]",
                    "message": f"{cell!r}: expected input:<expr>, output:<path> or description",
                }
            )
            layout.append(("skip", i))
            continue
        kind, spec, type_ = m.group(1).lower(), m.group(2), m.group(3)
        if type_ and type_.lower() not in COLUMN_TYPES:
            errors.append(
                {"field": f"csv.header[{i}]", "message": f"unknown type {type_!r}; one of {', '.join(COLUMN_TYPES)}"}
            )
        target = inputs if kind == "input" else outputs
        layout.append((kind, len(target)))
        target.append(_column(kind, spec, type_, base))
    rules: list[dict[str, Any]] = []
    for r, row in enumerate(body):
        when: list[Any] = [None] * len(inputs)
        then: list[Any] = [None] * len(outputs)
        rule: dict[str, Any] = {}
        for i, (kind, index) in enumerate(layout):
            cell = row[i] if i < len(row) else ""
            if kind == "input":
                text_cell = cell.strip()
                when[index] = (
                    orjson.loads(text_cell) if text_cell.startswith("{") and _json_ok(text_cell) else text_cell
                )
            elif kind == "output":
                try:
                    then[index] = _output_cell(cell)
                except CellError as exc:
                    errors.append({"field": f"csv.row[{r + 2}].{outputs[index]['name']}", "message": str(exc)})
            elif kind == "description" and cell.strip():
                rule["description"] = cell.strip()
        rule = {"when": when, "then": then, **rule}
        rules.append(rule)
    if errors:
        raise TableInvalid(errors)
    doc = {k: v for k, v in base.items() if k not in ("inputs", "outputs", "rules")}
    doc.update({"inputs": inputs, "outputs": outputs, "rules": rules})
    return doc


def _json_ok(text: str) -> bool:
    try:
        orjson.loads(text)
    except orjson.JSONDecodeError:
        return False
    return True


def _input_text(cell: Any) -> str:
    if cell is None:
        return "-"
    if isinstance(cell, str):
        return cell
    if isinstance(cell, list):
        return "in [" + ", ".join(orjson.dumps(m).decode() for m in cell) + "]"
    return orjson.dumps(cell).decode()


def _output_text(cell: Any) -> str:
    if cell is None:
        return ""
    if isinstance(cell, str):
        # quote what would read back as something else (a number, true, an empty cell, JSON)
        if _AMBIGUOUS.match(cell.strip()) or cell.strip() != cell or cell.startswith(("{", "[", '"')):
            return orjson.dumps(cell).decode()
        return cell
    return orjson.dumps(cell).decode()


def _header(kind: str, col: Mapping[str, Any]) -> str:
    key = "expression" if kind == "input" else "path"
    spec = col.get(key, col.get("path")) if kind == "input" else col.get("path")
    name = str(col.get("name"))
    if not isinstance(spec, str) or spec.rsplit(".", 1)[-1] != name:
        spec = name  # a JSONLogic expression or a renamed path: the base document keeps it
    type_ = col.get("type")
    return f"{kind}:{spec}" + (f" ({type_})" if type_ and type_ != "any" else "")


def table_to_csv(doc: Mapping[str, Any]) -> str:
    """CSV text for a table document's columns and rows (settings stay in the document)."""
    inputs = [c for c in doc.get("inputs", []) if isinstance(c, Mapping)]
    outputs = [c for c in doc.get("outputs", []) if isinstance(c, Mapping)]
    rules = [r for r in doc.get("rules", []) if isinstance(r, Mapping)]
    with_description = any(r.get("description") for r in rules)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    header = [_header("input", c) for c in inputs] + [_header("output", c) for c in outputs]
    writer.writerow(header + (["description"] if with_description else []))
    for rule in rules:
        when = rule.get("when") or []
        then = rule.get("then") or []
        if isinstance(when, Mapping):
            when = [when.get(c.get("name")) for c in inputs]
        if isinstance(then, Mapping):
            then = [then.get(c.get("name")) for c in outputs]
        line = [_input_text(c) for c in when] + [_output_text(c) for c in then]
        if with_description:
            line.append(str(rule.get("description") or ""))
        writer.writerow(line)
    return out.getvalue()
