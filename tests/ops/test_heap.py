"""`settle_heap`: what the gateway and the worker call once ready (GC was the sync path's p99)."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from app.heap import GEN0_THRESHOLD, settle_heap


@pytest.fixture
def restore_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restore_gc")
def test_startup_heap_is_frozen_and_gen0_collects_less_often() -> None:
    gc.unfreeze()
    survivor = [object() for _ in range(1000)]  # lives on, like compiled workflows
    _, gen1, gen2 = gc.get_threshold()
    settle_heap()
    assert gc.get_freeze_count() >= len(survivor)
    assert gc.get_threshold() == (GEN0_THRESHOLD, gen1, gen2)


@pytest.mark.usefixtures("restore_gc")
def test_cycles_made_after_settling_are_still_collected() -> None:
    settle_heap()

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a
    del a, b
    assert gc.collect() >= 2  # freezing the startup heap does not turn off collection
