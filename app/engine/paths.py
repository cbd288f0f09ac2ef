"""Orion's dot paths over the message context (dataflow-rs `utils.rs` rules).

- A numeric segment indexes an array, or creates one when missing; gaps are padded with `null`.
- A `#` prefix forces an object key: `data.codes.#200` gives `{"codes": {"200": ...}}`.
- Writing through an existing scalar or an intermediate `null` is silently ignored.
- A numeric segment meeting an existing object mid-path is silently ignored.

Paths are split once (`compile_path`) when a workflow is compiled; the per-message walk only
does dict/list operations.
"""

from __future__ import annotations

from typing import Any, Final

__all__ = [
    "MISSING",
    "PathPart",
    "clone",
    "compile_path",
    "get_path",
    "key_path",
    "set_keys",
    "set_path",
    "walk_keys",
]

MISSING: Final[Any] = object()

# (object key with one leading '#' stripped, array index or -1 when the raw segment is not numeric)
PathPart = tuple[str, int]


def _part(segment: str) -> PathPart:
    if segment.isascii() and segment.isdigit():
        return segment, int(segment)
    return (segment[1:] if segment.startswith("#") else segment), -1


def compile_path(path: str) -> tuple[PathPart, ...]:
    """Split a dot path once. The empty path is the root."""
    if not path:
        return ()
    return tuple(_part(s) for s in path.split("."))


def key_path(parts: tuple[PathPart, ...]) -> tuple[tuple[str, ...], str] | None:
    """`(intermediate keys, last key)` when every segment is an object key, else None.

    Such paths (`data.order.tier`, the common case) can take `set_keys`, which skips the array
    rules entirely; decided once at compile time.
    """
    if not parts or any(idx >= 0 for _, idx in parts):
        return None
    return tuple(key for key, _ in parts[:-1]), parts[-1][0]


def walk_keys(root: Any, head: tuple[str, ...]) -> Any:
    """The object at the all-object-key path `head`, created where missing; `MISSING` when an existing
    value on the way (or at the end) is not an object. Nothing is created on a walk that meets one."""
    cur = root
    for key in head:
        if not isinstance(cur, dict):
            return MISSING
        child = cur.get(key, MISSING)
        if child is MISSING:
            child = cur[key] = {}
        cur = child
    return cur if isinstance(cur, dict) else MISSING


def set_keys(root: Any, head: tuple[str, ...], last: str, value: Any) -> Any:
    """`set_path` for an all-object-key path (see `key_path`): same result, fewer checks.

    Missing objects are created; meeting anything but an object (array, scalar, null) writes
    nothing and returns `MISSING`, exactly as `set_path` does for non-numeric segments.
    """
    cur = walk_keys(root, head)
    if cur is MISSING:
        return MISSING
    old = cur.get(last, MISSING)
    cur[last] = value
    return old


def get_path(root: Any, parts: tuple[PathPart, ...]) -> Any:
    """The value at `parts`, or `MISSING` (missing key, index out of range, non-container)."""
    cur = root
    for key, idx in parts:
        if isinstance(cur, dict):
            cur = cur.get(key, MISSING)
            if cur is MISSING:
                return MISSING
        elif isinstance(cur, list):
            if idx < 0 or idx >= len(cur):
                return MISSING
            cur = cur[idx]
        else:
            return MISSING
    return cur


def set_path(root: Any, parts: tuple[PathPart, ...], value: Any) -> Any:
    """Write `value` at `parts` following Orion's rules; returns the previous value (or `MISSING`).

    Silently does nothing where Orion does nothing (through scalars/null, numeric segment on an
    existing object mid-path, non-numeric segment on an array).
    """
    if not parts:
        return MISSING
    cur = root
    last = len(parts) - 1
    for i, (key, idx) in enumerate(parts):
        if i == last:
            if isinstance(cur, dict):
                old = cur.get(key, MISSING)
                cur[key] = value
                return old
            if isinstance(cur, list) and idx >= 0:
                if idx >= len(cur):
                    cur.extend([None] * (idx + 1 - len(cur)))
                    old = MISSING
                else:
                    old = cur[idx]
                cur[idx] = value
                return old
            return MISSING
        next_is_array = parts[i + 1][1] >= 0
        if isinstance(cur, dict):
            if idx >= 0:
                # Orion ignores a numeric segment that meets an existing object mid-path.
                return MISSING
            child = cur.get(key, MISSING)
            if child is MISSING:
                child = [] if next_is_array else {}
                cur[key] = child
            cur = child
        elif isinstance(cur, list):
            if idx < 0:
                return MISSING
            if idx >= len(cur):
                cur.extend([None] * (idx + 1 - len(cur)))
            child = cur[idx]
            if child is None:
                # Array padding is replaced by a fresh container, as dataflow-rs does.
                child = [] if next_is_array else {}
                cur[idx] = child
            cur = child
        else:
            return MISSING
    return MISSING  # pragma: no cover - the loop always returns on the last part


def clone(value: Any) -> Any:
    """Deep copy of a JSON tree (dicts, lists, scalars); much faster than `copy.deepcopy`."""
    if type(value) is dict:
        return {k: (clone(v) if type(v) is dict or type(v) is list else v) for k, v in value.items()}
    if type(value) is list:
        return [(clone(v) if type(v) is dict or type(v) is list else v) for v in value]
    return value
