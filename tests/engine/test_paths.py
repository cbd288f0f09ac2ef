"""Orion's dot-path write/read rules."""

from __future__ import annotations

from typing import Any

import pytest

from app.engine.paths import MISSING, clone, compile_path, get_path, set_path


def _set(root: Any, path: str, value: Any) -> Any:
    set_path(root, compile_path(path), value)
    return root


def test_missing_objects_are_created() -> None:
    assert _set({}, "data.a.b", 1) == {"data": {"a": {"b": 1}}}


def test_numeric_segment_creates_an_array_padded_with_null() -> None:
    assert _set({"data": {}}, "data.items.2", "x") == {"data": {"items": [None, None, "x"]}}


def test_numeric_segment_then_key_creates_object_inside_array() -> None:
    assert _set({}, "items.0.name", "a") == {"items": [{"name": "a"}]}


def test_hash_prefix_forces_an_object_key() -> None:
    assert _set({"data": {}}, "data.codes.#200", "OK") == {"data": {"codes": {"200": "OK"}}}


def test_existing_array_index_is_overwritten() -> None:
    assert _set({"a": [1, 2, 3]}, "a.1", 9) == {"a": [1, 9, 3]}


def test_writing_through_a_scalar_is_silently_ignored() -> None:
    assert _set({"data": {"a": 5}}, "data.a.b", 1) == {"data": {"a": 5}}


def test_writing_through_an_intermediate_null_is_silently_ignored() -> None:
    assert _set({"data": {"a": None}}, "data.a.b", 1) == {"data": {"a": None}}


def test_numeric_segment_on_an_existing_object_mid_path_is_ignored() -> None:
    assert _set({"data": {"a": {}}}, "data.a.0.x", 1) == {"data": {"a": {}}}


def test_non_numeric_segment_on_an_array_is_ignored() -> None:
    assert _set({"a": [1]}, "a.x", 2) == {"a": [1]}


def test_set_returns_the_previous_value() -> None:
    root = {"a": {"b": 1}}
    assert set_path(root, compile_path("a.b"), 2) == 1
    assert set_path(root, compile_path("a.c"), 3) is MISSING


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("a.b", 1),
        ("a.list.1", "y"),
        ("a.#0", "zero"),
        ("a.missing", MISSING),
        ("a.list.9", MISSING),
        ("a.b.c", MISSING),
    ],
)
def test_get_path(path: str, expected: Any) -> None:
    root = {"a": {"b": 1, "list": ["x", "y"], "0": "zero"}}
    assert get_path(root, compile_path(path)) is expected or get_path(root, compile_path(path)) == expected


def test_clone_is_deep() -> None:
    src = {"a": [{"b": 1}], "c": "s"}
    out = clone(src)
    out["a"][0]["b"] = 2
    assert src == {"a": [{"b": 1}], "c": "s"}
