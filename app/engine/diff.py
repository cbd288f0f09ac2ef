"""Semantic diff of two versions of a definition (workflow, channel, ruleset, flow): what a reviewer reads.

Lists are compared by identity where the documents have one — tasks and steps by `id`, map mappings by
`path`, decision-table rows by position — so a moved task is "moved", not "removed + added". Breaking
changes are flagged against what consumers can observe: fields a workflow stops writing (map paths), codes a
ruleset stops returning (terminal steps, or outside its declared `contract.codes`), channel inputs that
become required (`contract.input_schema.required`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Change", "DefinitionDiff", "diff_definitions", "value_changes"]

# List fields whose items are identified by a key, by the field's name.
_KEYED: dict[str, str] = {"tasks": "id", "steps": "id", "mappings": "path", "branches": "id", "rules": "id"}
_IGNORED = frozenset({"version", "status", "rollout_percentage", "created_at", "updated_at", "activated_at"})


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    change: str  # added | removed | changed | moved
    before: Any = None
    after: Any = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"path": self.path, "change": self.change}
        if self.change != "added":
            out["before"] = self.before
        if self.change != "removed":
            out["after"] = self.after
        return out


@dataclass(slots=True)
class DefinitionDiff:
    changes: list[Change] = field(default_factory=list)
    breaking: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        counts: dict[str, int] = {}
        for c in self.changes:
            counts[c.change] = counts.get(c.change, 0) + 1
        return {
            "summary": {"changes": len(self.changes), **counts, "breaking": len(self.breaking)},
            "changes": [c.to_json() for c in self.changes],
            "breaking": list(self.breaking),
        }


def diff_definitions(kind: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> DefinitionDiff:
    """The semantic diff from `before` to `after` (two version documents of one object)."""
    out = DefinitionDiff()
    _diff(
        {k: v for k, v in before.items() if k not in _IGNORED},
        {k: v for k, v in after.items() if k not in _IGNORED},
        "",
        out.changes,
    )
    out.breaking = _breaking(kind, before, after)
    return out


def value_changes(before: Any, after: Any) -> list[Change]:
    """Path-level changes between two JSON values (e.g. two outputs of a workflow)."""
    out: list[Change] = []
    _diff(before, after, "", out)
    return out


def _join(base: str, key: str) -> str:
    return f"{base}.{key}" if base else key


def _diff(a: Any, b: Any, path: str, out: list[Change]) -> None:
    if a == b:
        return
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        for k in [*a.keys(), *(k for k in b if k not in a)]:
            sub = _join(path, str(k))
            if k not in b:
                out.append(Change(sub, "removed", a[k]))
            elif k not in a:
                out.append(Change(sub, "added", None, b[k]))
            else:
                key = _KEYED.get(str(k))
                if key and _keyed_list(a[k], key) and _keyed_list(b[k], key):
                    _diff_keyed(a[k], b[k], key, sub, out)
                else:
                    _diff(a[k], b[k], sub, out)
        return
    same_shape = isinstance(a, list) and isinstance(b, list) and a and len(a) == len(b)
    if same_shape and all(isinstance(x, Mapping) for x in (*a, *b)):  # object lists (table rows): by position
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _diff(x, y, f"{path}[{i}]", out)
        return
    out.append(Change(path, "changed", a, b))


def _keyed_list(items: Any, key: str) -> bool:
    if not isinstance(items, list):
        return False
    ids = [i.get(key) for i in items if isinstance(i, Mapping)]
    return len(ids) == len(items) and all(isinstance(x, str) for x in ids) and len(set(ids)) == len(ids)


def _diff_keyed(
    a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]], key: str, path: str, out: list[Change]
) -> None:
    by_a = {str(i[key]): i for i in a}
    by_b = {str(i[key]): i for i in b}
    for k, item in by_a.items():
        if k not in by_b:
            out.append(Change(f"{path}[{k}]", "removed", item))
    common_a = [k for k in by_a if k in by_b]
    common_b = [k for k in by_b if k in by_a]
    for k in by_b:
        if k not in by_a:
            out.append(Change(f"{path}[{k}]", "added", None, by_b[k]))
        else:
            _diff(by_a[k], by_b[k], f"{path}[{k}]", out)
    if common_a != common_b:
        moved = [k for i, k in enumerate(common_b) if common_a[i] != k]
        for k in moved:
            out.append(Change(f"{path}[{k}]", "moved", common_a.index(k), common_b.index(k)))


def _written_paths(doc: Mapping[str, Any]) -> set[str]:
    """`data.*` paths a workflow's map tasks write (what downstream consumers read)."""
    paths: set[str] = set()
    for task in doc.get("tasks") or ():
        fn = task.get("function") if isinstance(task, Mapping) else None
        if isinstance(fn, Mapping) and fn.get("name") == "map":
            for m in (fn.get("input") or {}).get("mappings") or ():
                if isinstance(m, Mapping) and isinstance(m.get("path"), str) and m["path"].startswith("data."):
                    paths.add(m["path"])
    return paths


def _terminal_codes(doc: Mapping[str, Any]) -> set[str]:
    steps = doc.get("steps")
    items = steps.values() if isinstance(steps, Mapping) else steps if isinstance(steps, list) else ()
    return {
        str(s["code"])
        for s in items
        if isinstance(s, Mapping) and s.get("kind", s.get("type")) == "terminal" and s.get("code") is not None
    }


def _breaking(kind: str, before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for p in sorted(_written_paths(before) - _written_paths(after)):
        found.append(f"no longer writes {p}: consumers reading it will not find it")
    old_codes, new_codes = _terminal_codes(before), _terminal_codes(after)
    for c in sorted(old_codes - new_codes):
        found.append(f"no longer returns code {c!r}")
    contract = after.get("contract")
    if isinstance(contract, Mapping):
        allowed = contract.get("codes")
        if isinstance(allowed, list):
            for c in sorted(new_codes - {str(x) for x in allowed}):
                found.append(f"returns code {c!r}, outside the declared contract.codes")
        schema = contract.get("input_schema")
        old_contract = before.get("contract")
        old_schema = old_contract.get("input_schema") if isinstance(old_contract, Mapping) else None
        if isinstance(schema, Mapping):
            old_required = set(old_schema.get("required") or ()) if isinstance(old_schema, Mapping) else set()
            for f in sorted(set(schema.get("required") or ()) - old_required):
                found.append(f"input field {f!r} becomes required: callers that omit it are refused")
    return found
