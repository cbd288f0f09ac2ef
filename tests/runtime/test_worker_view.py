"""The worker's own config view: snapshots apply in order, causal waits cover the worker's routes.

Against the real broker. The gate below holds the worker's topic creation (the await inside
`_apply_snapshot`) so the window in which the reader has folded a change but the worker's routes do not
show it yet is wide open, instead of being left to timing.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.config_store import Activate, NewVersion, Update
from app.kafka import headers as H
from app.settings import Settings
from app.worker.runner import ChannelWorker
from tests.runtime.worker_support import Runtime, read_records


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings)
    await runtime.reader.ready(20)
    yield runtime
    await runtime.close()


async def _until(cond: Callable[[], bool], seconds: float = 20.0) -> None:
    """Wait for an in-process condition, bounded."""
    deadline = time.monotonic() + seconds
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


def _gate_topic_creation(worker: ChannelWorker) -> threading.Event:
    """Hold the worker's topic creation (run in a thread by `_apply_snapshot`) until the event is set."""
    gate = threading.Event()
    original = worker._ensure_topics

    def gated(*args: Any) -> None:
        gate.wait(20)  # bounded: a test that forgets to open the gate still ends
        original(*args)

    worker._ensure_topics = gated  # type: ignore[method-assign]
    return gate


async def _move_output(rt: Runtime, channel: str, topic: str) -> int:
    """A new active channel version whose output goes to `topic`; returns the config offset."""
    doc = {
        "name": channel,
        "channel_type": "async",
        "protocol": "kafka",
        "workflow_id": channel,
        "config": {"output": topic},
    }
    await rt.writer.apply("channel", channel, NewVersion())
    await rt.writer.apply("channel", channel, Update(doc))
    return (await rt.writer.apply("channel", channel, Activate())).offset


async def test_an_older_snapshot_never_overwrites_newer_routes(rt: Runtime) -> None:
    await rt.activate("first")
    worker = await rt.worker()
    old = worker.reader.snapshot
    await rt.activate("second")
    second = rt.names.channel("second")
    await _until(lambda: second in worker._routes)
    # A listener call for the old snapshot finishing late (it was created first, then awaited a thread).
    await worker._apply_snapshot(old)
    assert second in worker._routes
    assert worker._view is not None and worker._view.generation == worker.reader.snapshot.generation


async def test_causal_wait_covers_the_worker_routes_not_only_the_reader(rt: Runtime) -> None:
    await rt.activate("moving")
    worker = await rt.worker()
    gate = _gate_topic_creation(worker)
    moved = f"{rt.settings.topic_prefix}moved.out"
    offset = await _move_output(rt, "moving", moved)
    await _until(lambda: worker.reader.applied_offset >= offset)  # the reader has the change...
    assert worker.view_offset < offset  # ...the worker's routes do not, while topic creation is held
    rt.send("moving", {"data": {"n": 1}}, key="m-1", headers={H.CONFIG_OFFSET: str(offset), H.TRACE_ID: "m-1"})
    await _until(lambda: worker.processed >= 1)  # consumed while the routes were still the old ones
    gate.set()
    await _until(lambda: worker.view_offset >= offset)
    records = await asyncio.to_thread(read_records, rt.settings, moved, until=lambda r: len(r) >= 1, timeout=20)
    assert [r.key() for r in records] == [b"m-1"]
