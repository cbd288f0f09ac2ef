"""Decision tables (DMN hit policies), compiled once into one generated Python function per table.

Document (the `decision_table` task's input, or a ruleset step's `table`):

    {"name": "shipping_rates", "hit_policy": "first",            # unique (default) | first | priority
     "aggregation": "sum",                                       #   | any | collect | rule_order
     "inputs":  [{"name": "weight", "expression": "data.weight", "type": "number"}, ...],
     "outputs": [{"name": "rate", "path": "data.rate", "type": "number", "values": [...]}, ...],
     "rules":   [{"when": ["< 1", "in [EU, US]"], "then": [4.5], "description": "..."}, ...],
     "default": {"rate": 99},                                    # written when no row matches
     "target":  "data.shipping"}                                 # optional: outputs as one object

`expression` is a dot path (read like `{"var": ...}`) or any JSONLogic; `when`/`then` may also be
objects keyed by column name (a missing input is `-`). Cells: see `cells.py`; output cells are
literals or JSONLogic objects evaluated against the message context.

Results: single-hit policies write each output at its `path` (default `data.<name>`), or all of them
as one object at `target`. `collect` and `rule_order` write lists (one per output, or a list of
objects at `target`); `collect` with `aggregation` (sum|min|max|count) writes one number. No match:
the `default` is written, or nothing.

`compile_table` turns every row into a precomputed Python condition (no per-record parsing); the
row conditions of a table are joined into one function (`first` returns at the first true row).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.engine.fastlogic import MISSING, lookup
from app.engine.jsonlogic import Logic, LogicCompileError, LogicError, compile_logic
from app.engine.paths import MISSING as NOT_SET
from app.engine.paths import PathPart, compile_path, set_path
from app.engine.rules.cells import COLUMN_TYPES, Cell, CellError, parse_cell
from app.engine.rules.errors import DecisionConflict, DecisionNotUnique, FieldErrors

__all__ = [
    "AGGREGATIONS",
    "HIT_POLICIES",
    "CompiledTable",
    "TableInvalid",
    "analyse_table",
    "compile_table",
]

HIT_POLICIES = ("unique", "first", "priority", "any", "collect", "rule_order")
AGGREGATIONS = ("sum", "min", "max", "count")
# DMN's one-letter forms, as spreadsheets write them
_ALIASES = {
    "u": ("unique", None),
    "f": ("first", None),
    "p": ("priority", None),
    "a": ("any", None),
    "c": ("collect", None),
    "r": ("rule_order", None),
    "c+": ("collect", "sum"),
    "c<": ("collect", "min"),
    "c>": ("collect", "max"),
    "c#": ("collect", "count"),
    "rule order": ("rule_order", None),
}
_SINGLE = frozenset({"unique", "first", "priority", "any"})
MAX_ROWS = 5_000
# Static overlap detection compares every pair of rows; above this many rows only the run-time check
# (DECISION_NOT_UNIQUE) guards a unique table, so a large table cannot stall every config reader.
MAX_OVERLAP_CHECK_ROWS = 1_000


class TableInvalid(FieldErrors):
    """A table document with field errors: `errors` = [{"field", "message"}]."""

    what = "decision table"


@dataclass(frozen=True, slots=True)
class _Input:
    name: str
    type: str
    segments: tuple[str, ...] | None  # a plain path read, else `logic`
    logic: Logic | None
    source: Any


@dataclass(frozen=True, slots=True)
class _Output:
    name: str
    type: str
    path: tuple[PathPart, ...]
    path_text: str
    values: tuple[Any, ...] | None


# A row's output cell: (is_constant, value or Logic)
_OutCell = tuple[bool, Any]


class CompiledTable:
    """A ready-to-run decision table; `decide(context)` gives the result, `apply` writes it."""

    __slots__ = (
        "aggregation",
        "constant_rows",
        "default",
        "descriptions",
        "hit_policy",
        "inputs",
        "match_all",
        "match_first",
        "name",
        "outputs",
        "priority",
        "row_outputs",
        "source",
        "target",
        "target_text",
    )

    def __init__(
        self,
        name: str,
        hit_policy: str,
        aggregation: str | None,
        inputs: tuple[_Input, ...],
        outputs: tuple[_Output, ...],
        row_outputs: tuple[tuple[_OutCell, ...], ...],
        descriptions: tuple[str | None, ...],
        default: dict[str, Any] | None,
        target: tuple[PathPart, ...] | None,
        target_text: str | None,
        match_first: Callable[[dict[str, Any]], int],
        match_all: Callable[[dict[str, Any]], list[int]],
        priority: tuple[tuple[int, ...], ...],
        source: Mapping[str, Any],
    ) -> None:
        self.name = name
        self.hit_policy = hit_policy
        self.aggregation = aggregation
        self.inputs = inputs
        self.outputs = outputs
        self.row_outputs = row_outputs
        # rows whose outputs are all literals: their result dict is built once here
        self.constant_rows: tuple[dict[str, Any] | None, ...] = tuple(
            {o.name: v for o, (_, v) in zip(outputs, row, strict=True)} if all(c for c, _ in row) else None
            for row in row_outputs
        )
        self.descriptions = descriptions
        self.default = default
        self.target = target
        self.target_text = target_text
        self.match_first = match_first
        self.match_all = match_all
        self.priority = priority
        self.source = source

    def __repr__(self) -> str:
        return f"CompiledTable({self.name!r}, {self.hit_policy}, rows={len(self.row_outputs)})"

    # -- deciding -------------------------------------------------------------------------------------
    def _row_values(self, row: int, context: dict[str, Any]) -> dict[str, Any]:
        fixed = self.constant_rows[row]
        if fixed is not None:
            return fixed.copy()  # a copy: the result is written into messages that later tasks may change
        out: dict[str, Any] = {}
        for spec, (const, value) in zip(self.outputs, self.row_outputs[row], strict=True):
            out[spec.name] = value if const else value.evaluate(context)
        return out

    def matches(self, context: dict[str, Any]) -> list[int]:
        """Indexes (0-based) of every row whose conditions all hold."""
        if self.hit_policy == "first":
            row = self.match_first(context)
            return [] if row < 0 else [row]
        return self.match_all(context)

    def decide(self, context: dict[str, Any]) -> tuple[list[int], Any]:
        """(selected rows, result): the result is None when nothing matched and there is no default.

        Single-hit policies give `{output: value}`; multi-hit ones a list of them; an aggregation a
        number. Raises `DecisionNotUnique` / `DecisionConflict` (policy violations, 422) and
        `LogicError` when an output expression fails.
        """
        policy = self.hit_policy
        if policy == "first":
            row = self.match_first(context)
            if row < 0:
                return [], self.default
            return [row], self._row_values(row, context)
        rows = self.match_all(context)
        if not rows:
            return [], self.default
        if policy == "unique":
            if len(rows) > 1:
                raise DecisionNotUnique(
                    f"decision table '{self.name}': rows {_row_list(rows)} all match (hit policy unique)"
                )
            return rows, self._row_values(rows[0], context)
        if policy == "any":
            first = self._row_values(rows[0], context)
            for row in rows[1:]:
                other = self._row_values(row, context)
                if other != first:
                    raise DecisionConflict(
                        f"decision table '{self.name}': rows {rows[0] + 1} and {row + 1} match with different "
                        f"outputs {first} and {other} (hit policy any)"
                    )
            return rows, first
        if policy == "priority":
            best = min(rows, key=lambda r: self.priority[r])
            return [best], self._row_values(best, context)
        values = [self._row_values(r, context) for r in rows]  # collect / rule_order: in row order
        agg = self.aggregation
        if agg is None:
            return rows, values
        if agg == "count":
            return rows, {self.outputs[0].name: len(values)} if self.outputs else len(values)
        name = self.outputs[0].name
        numbers = [v[name] for v in values if _is_number(v[name])]
        if not numbers:
            return rows, self.default
        total: Any = sum(numbers) if agg == "sum" else (min(numbers) if agg == "min" else max(numbers))
        return rows, {name: total}

    def read_inputs(self, context: dict[str, Any]) -> dict[str, Any]:
        """Each input column's value (for explanations)."""
        out: dict[str, Any] = {}
        for col in self.inputs:
            if col.segments is not None:
                found = lookup(context, col.segments)
                out[col.name] = None if found is MISSING else found
            else:
                assert col.logic is not None
                try:
                    out[col.name] = col.logic.evaluate(context)
                except LogicError:
                    out[col.name] = None
        return out

    # -- writing --------------------------------------------------------------------------------------
    def apply(self, context: dict[str, Any], result: Any) -> list[tuple[str, Any, Any]]:
        """Write a `decide` result into the context; returns the audit changes."""
        if result is None:
            return []
        changes: list[tuple[str, Any, Any]] = []
        if self.target is not None:
            old = set_path(context, self.target, result)
            changes.append((self.target_text or "", None if old is NOT_SET else old, result))
            return changes
        if isinstance(result, list):  # multi-hit: one list per output
            for spec in self.outputs:
                value = [r.get(spec.name) for r in result]
                old = set_path(context, spec.path, value)
                changes.append((spec.path_text, None if old is NOT_SET else old, value))
            return changes
        if not isinstance(result, dict):  # count without outputs
            return changes
        for spec in self.outputs:
            if spec.name in result:
                value = result[spec.name]
                old = set_path(context, spec.path, value)
                changes.append((spec.path_text, None if old is NOT_SET else old, value))
        return changes

    def explain(self, context: dict[str, Any], elapsed_us: float | None = None) -> dict[str, Any]:
        """What the table saw and chose, for decision explanations (not on the hot path)."""
        matched = self.match_all(context)
        entry: dict[str, Any] = {
            "table": self.name,
            "hit_policy": self.hit_policy + (f" ({self.aggregation})" if self.aggregation else ""),
            "inputs": self.read_inputs(context),
            "matched_rows": [self._row_ref(r) for r in matched],
        }
        if elapsed_us is not None:
            entry["elapsed_us"] = round(elapsed_us, 2)
        return entry

    def _row_ref(self, row: int) -> dict[str, Any]:
        ref: dict[str, Any] = {"row": row + 1}
        if self.descriptions[row]:
            ref["description"] = self.descriptions[row]
        return ref


def _row_list(rows: Sequence[int]) -> str:
    return ", ".join(str(r + 1) for r in rows)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- compilation ---------------------------------------------------------------------------------------
def _typed_output(value: Any, column_type: str) -> bool:
    if column_type == "any" or value is None:
        return True
    if column_type == "number":
        return _is_number(value)
    if column_type == "string":
        return isinstance(value, str)
    return isinstance(value, bool)


def analyse_table(doc: Any) -> tuple[CompiledTable | None, list[dict[str, str]]]:
    """Check and compile a table document; never raises for bad input."""
    errors: list[dict[str, str]] = []

    def err(field: str, message: str) -> None:
        errors.append({"field": field, "message": message})

    if not isinstance(doc, Mapping):
        return None, [{"field": "", "message": "a decision table must be a JSON object"}]
    name = doc.get("name", "decision_table")
    if not isinstance(name, str) or not name:
        err("name", "must be a non-empty string")
        name = "decision_table"

    policy_raw = doc.get("hit_policy", "unique")
    aggregation = doc.get("aggregation")
    policy = ""
    if not isinstance(policy_raw, str):
        err("hit_policy", f"must be one of {', '.join(HIT_POLICIES)}")
    else:
        key = policy_raw.strip().lower()
        if key in HIT_POLICIES:
            policy = key
        elif key in _ALIASES:
            policy, alias_agg = _ALIASES[key]
            aggregation = aggregation or alias_agg
        else:
            err("hit_policy", f"unknown hit policy {policy_raw!r}; expected one of {', '.join(HIT_POLICIES)}")
    if aggregation is not None:
        if aggregation not in AGGREGATIONS:
            err("aggregation", f"unknown aggregation {aggregation!r}; expected one of {', '.join(AGGREGATIONS)}")
        elif policy and policy != "collect":
            err("aggregation", "only a collect table can aggregate")

    target_text = doc.get("target")
    target: tuple[PathPart, ...] | None = None
    if target_text is not None:
        if not isinstance(target_text, str) or not target_text:
            err("target", "must be a non-empty path such as data.result")
        else:
            target = compile_path(target_text)

    inputs = _inputs(doc.get("inputs"), err)
    outputs = _outputs(doc.get("outputs"), err, policy)
    if policy == "collect" and aggregation in ("sum", "min", "max") and len(outputs) != 1:
        err("outputs", f"a collect table with aggregation {aggregation} needs exactly one output")

    rules_raw = doc.get("rules", [])
    if not isinstance(rules_raw, list):
        err("rules", "must be an array of {when, then}")
        rules_raw = []
    if len(rules_raw) > MAX_ROWS:
        err("rules", f"at most {MAX_ROWS} rows")
        rules_raw = []
    cells: list[list[Cell]] = []
    row_outputs: list[tuple[_OutCell, ...]] = []
    descriptions: list[str | None] = []
    for r, row in enumerate(rules_raw):
        base = f"rules[{r}]"
        if not isinstance(row, Mapping):
            err(base, "must be an object {when, then}")
            continue
        cells.append(_row_cells(row.get("when"), inputs, base, err))
        row_outputs.append(_row_outputs(row.get("then"), outputs, base, err))
        desc = row.get("description")
        descriptions.append(desc if isinstance(desc, str) and desc else None)

    default = doc.get("default")
    if default is not None:
        if not isinstance(default, Mapping):
            err("default", "must be an object {output name: value}")
            default = None
        else:
            unknown = sorted(set(default) - {o.name for o in outputs})
            if unknown and outputs:
                err("default", f"unknown output(s) {', '.join(unknown)}")
            default = dict(default)

    priority: list[tuple[int, ...]] = []
    if policy == "priority" and not errors:
        if not any(o.values for o in outputs):
            err("outputs", "a priority table needs `values` (highest priority first) on at least one output")
        for r, outs in enumerate(row_outputs):
            order: list[int] = []
            for spec, (const, value) in zip(outputs, outs, strict=True):
                if spec.values is None:
                    continue
                if not const or value not in spec.values:
                    err(
                        f"rules[{r}].then.{spec.name}",
                        f"{value!r} is not one of the output's values {list(spec.values)}",
                    )
                    continue
                order.append(spec.values.index(value))
            priority.append(tuple(order))

    if policy == "unique" and not errors and len(cells) <= MAX_OVERLAP_CHECK_ROWS:
        _check_overlaps(cells, inputs, err)

    if errors:
        return None, errors
    match_first, match_all = _generate(name, inputs, cells)
    return (
        CompiledTable(
            name,
            policy,
            aggregation,
            inputs,
            outputs,
            tuple(row_outputs),
            tuple(descriptions),
            default,
            target,
            target_text,
            match_first,
            match_all,
            tuple(priority),
            dict(doc),
        ),
        errors,
    )


def compile_table(doc: Any) -> CompiledTable:
    """Compile a table document once; raises `TableInvalid` with every field error."""
    table, errors = analyse_table(doc)
    if table is None:
        raise TableInvalid(errors)
    return table


_Err = Callable[[str, str], None]


def _columns(raw: Any, kind: str, shape: str, err: _Err) -> Iterator[tuple[str, str, str, Mapping[str, Any]]]:
    """(field prefix, name, type, column) of each well-formed `inputs`/`outputs` entry; reports the rest
    (a generator, so each column's errors come in column order)."""
    plural = f"{kind}s"
    if not isinstance(raw, list):
        err(plural, f"is required: an array of {shape}")
        return
    seen: set[str] = set()
    for i, col in enumerate(raw):
        base = f"{plural}[{i}]"
        if not isinstance(col, Mapping):
            err(base, f"must be an object {shape}")
            continue
        name = col.get("name")
        if not isinstance(name, str) or not name:
            err(f"{base}.name", "is required")
            continue
        if name in seen:
            err(f"{base}.name", f"duplicate {kind} {name!r}")
        seen.add(name)
        column_type = col.get("type", "any")
        if column_type not in COLUMN_TYPES:
            err(f"{base}.type", f"must be one of {', '.join(COLUMN_TYPES)}")
            column_type = "any"
        yield base, name, column_type, col


def _inputs(raw: Any, err: _Err) -> tuple[_Input, ...]:
    out: list[_Input] = []
    for base, name, column_type, col in _columns(raw, "input", "{name, expression, type?}", err):
        expr = col.get("expression", col.get("path"))
        if isinstance(expr, str) and expr:
            out.append(_Input(name, column_type, tuple(expr.split(".")), None, expr))
        elif isinstance(expr, dict):
            try:
                logic = compile_logic(expr)
            except LogicCompileError as exc:
                err(f"{base}.expression", f"invalid JSONLogic: {exc}")
                continue
            out.append(_Input(name, column_type, None, logic, expr))
        else:
            err(f"{base}.expression", "is required: a dot path (data.amount) or a JSONLogic object")
    return tuple(out)


def _outputs(raw: Any, err: _Err, policy: str) -> tuple[_Output, ...]:
    out: list[_Output] = []
    for base, name, column_type, col in _columns(raw, "output", "{name, path?, type?, values?}", err):
        path = col.get("path", f"data.{name}")
        if not isinstance(path, str) or not path:
            err(f"{base}.path", "must be a non-empty path")
            path = f"data.{name}"
        values = col.get("values")
        if values is not None:
            if not isinstance(values, list) or not values:
                err(f"{base}.values", "must be a non-empty array (highest priority first)")
                values = None
            else:
                for v in values:
                    if not _typed_output(v, column_type):
                        err(f"{base}.values", f"{v!r} is not a {column_type}")
                values = tuple(values)
        out.append(_Output(name, column_type, compile_path(path), path, values))
    if not out and policy != "collect" and isinstance(raw, list):
        err("outputs", "at least one output is required")
    return tuple(out)


def _in_column_order(value: Any, names: list[str], field: str, kind: str, err: _Err) -> Any:
    """A row's `when`/`then` as a list in column order; an object keyed by column name is accepted."""
    if value is None:
        return []
    if isinstance(value, Mapping):
        unknown = sorted(set(value) - set(names))
        if unknown:
            err(field, f"unknown {kind}(s) {', '.join(map(str, unknown))}")
        return [value.get(name) for name in names]
    return value


def _row_cells(when: Any, inputs: tuple[_Input, ...], base: str, err: _Err) -> list[Cell]:
    when = _in_column_order(when, [c.name for c in inputs], f"{base}.when", "input", err)
    if not isinstance(when, list):
        err(f"{base}.when", "must be an array (one cell per input) or an object {input: cell}")
        return [parse_cell(None) for _ in inputs]
    if len(when) != len(inputs):
        err(f"{base}.when", f"has {len(when)} cells for {len(inputs)} inputs")
        return [parse_cell(None) for _ in inputs]
    cells: list[Cell] = []
    for c, (raw, col) in enumerate(zip(when, inputs, strict=True)):
        try:
            cells.append(parse_cell(raw, col.type))
        except CellError as exc:
            err(f"{base}.when[{c}]", f"input {col.name!r}: {exc}")
            cells.append(parse_cell(None))
    return cells


def _row_outputs(then: Any, outputs: tuple[_Output, ...], base: str, err: _Err) -> tuple[_OutCell, ...]:
    then = _in_column_order(then, [o.name for o in outputs], f"{base}.then", "output", err)
    if not isinstance(then, list) or len(then) != len(outputs):
        err(f"{base}.then", f"needs one value per output ({len(outputs)})")
        return tuple((True, None) for _ in outputs)
    cells: list[_OutCell] = []
    for c, (raw, col) in enumerate(zip(then, outputs, strict=True)):
        if isinstance(raw, dict):
            try:
                logic = compile_logic(raw)
            except LogicCompileError as exc:
                err(f"{base}.then[{c}]", f"output {col.name!r}: invalid JSONLogic: {exc}")
                cells.append((True, None))
                continue
            if logic.is_constant:
                cells.append((True, logic.evaluate({})))
            else:
                cells.append((False, logic))
            continue
        if not _typed_output(raw, col.type):
            err(f"{base}.then[{c}]", f"output {col.name!r}: {raw!r} is not a {col.type}")
        cells.append((True, raw))
    return tuple(cells)


def _check_overlaps(cells: list[list[Cell]], inputs: tuple[_Input, ...], err: _Err) -> None:
    """A `unique` table whose rows provably overlap is refused (only decidable cells are compared)."""
    for (a, row_a), (b, row_b) in itertools.combinations(enumerate(cells), 2):
        overlap = True
        for cell_a, cell_b in zip(row_a, row_b, strict=True):
            da, db = cell_a.domain, cell_b.domain
            if da is None or db is None or not da.overlaps(db):
                overlap = False
                break
        if overlap:
            both = ", ".join(
                f"{col.name}: {ca.text} / {cb.text}" for col, ca, cb in zip(inputs, row_a, row_b, strict=True)
            )
            err(
                f"rules[{b}].when",
                f"overlaps rules[{a}] in a unique table (rows {a + 1} and {b + 1} can both match: {both}); "
                "make the rows disjoint or use hit policy first/priority/any/collect",
            )


def _read_expr(i: int, col: _Input, constants: list[Any]) -> list[str]:
    """Statements that set `v<i>` to the input's value (None when missing)."""
    if col.segments is not None and all(not s.isdigit() for s in col.segments):
        lines = [f"v{i} = ctx"]
        for seg in col.segments:
            lines.append(f"v{i} = v{i}.get({seg!r}) if type(v{i}) is dict else None")
        return lines
    if col.segments is not None:
        constants.append(col.segments)
        return [f"v{i} = _lookup(ctx, _c[{len(constants) - 1}])", f"if v{i} is _MISSING: v{i} = None"]
    constants.append(col.logic)
    return [f"v{i} = _safe(_c[{len(constants) - 1}], ctx)"]


def _safe(logic: Logic, context: dict[str, Any]) -> Any:
    try:
        return logic.evaluate(context)
    except LogicError:
        return None


def _generate(
    name: str, inputs: tuple[_Input, ...], cells: list[list[Cell]]
) -> tuple[Callable[[dict[str, Any]], int], Callable[[dict[str, Any]], list[int]]]:
    """Two functions over the context: index of the first matching row (-1), and all matching rows."""
    constants: list[Any] = []
    tests: list[str] = []
    used: set[int] = set()
    for row in cells:
        parts = []
        for i, cell in enumerate(row):
            expr = cell.test(i, constants)
            if expr is not None:
                parts.append(expr)
                used.add(i)
        tests.append(" and ".join(f"({p})" for p in parts) if parts else "True")
    prelude: list[str] = []
    for i, col in enumerate(inputs):
        if i not in used:
            continue
        prelude.extend(_read_expr(i, col, constants))
        prelude.append(f"t{i} = type(v{i})")
        prelude.append(f"n{i} = v{i} if t{i} is int or t{i} is float else _NAN")
        prelude.append(f"s{i} = v{i} if t{i} is str else None")
    body_first = [f"    {line}" for line in prelude]
    body_all = [f"    {line}" for line in prelude] + ["    out = []"]
    for r, test in enumerate(tests):
        body_first.append(f"    if {test}: return {r}")
        body_all.append(f"    if {test}: out.append({r})")
    body_first.append("    return -1")
    body_all.append("    return out")
    source = "def match_first(ctx):\n" + "\n".join(body_first) + "\n\ndef match_all(ctx):\n" + "\n".join(body_all)
    namespace: dict[str, Any] = {
        "_c": constants,
        "_lookup": lookup,
        "_MISSING": MISSING,
        "_safe": _safe,
        "_NAN": math.nan,
    }
    code = compile(source, f"<decision_table {name}>", "exec")
    exec(code, namespace)  # generated from parsed cells only: literals go through repr()/constants
    return namespace["match_first"], namespace["match_all"]


def timed_decide(table: CompiledTable, context: dict[str, Any]) -> tuple[list[int], Any, float]:
    """`decide` plus its duration in microseconds (explanations only)."""
    start = time.perf_counter()
    rows, result = table.decide(context)
    return rows, result, (time.perf_counter() - start) * 1e6
