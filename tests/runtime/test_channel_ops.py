"""Channel operations on the real broker: pause/resume, start_from, replay (seek) from a time or an offset.

Every request is a runtime record on the config topic (app/config_store/channel_ops.py) obeyed by the
worker's consumer (app/worker/consumption.py)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import orjson
import pytest
from confluent_kafka import Message

from app.config_store import Activate, Create
from app.config_store.channel_ops import SeekRequest, request_seek, seek_applied, set_paused
from app.kafka import headers as H
from app.kafka.admin import create_admin, group_positions
from app.kafka.producer import produce_sync
from app.kafka.topics import ensure_channel_topic
from app.settings import Settings
from tests.runtime.worker_support import COMPLEX, Runtime, read_records


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings)
    await runtime.reader.ready(20)
    yield runtime
    await runtime.close()


async def _until(cond: object, seconds: float = 30.0) -> None:
    """Wait for an in-process condition (a worker's state), bounded."""
    deadline = time.monotonic() + seconds
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def _keys(msgs: list[Message]) -> list[str]:
    return [m.key().decode() for m in msgs]


async def _outputs(rt: Runtime, channel: str, n: int) -> list[Message]:
    return await asyncio.to_thread(rt.outputs, channel, n, 30.0)


def _send(rt: Runtime, channel: str, keys: list[str]) -> list[Message]:
    return [rt.send(channel, {"data": {"k": k}}, key=k, headers={H.TRACE_ID: k}) for k in keys]


async def _channel_on(rt: Runtime, name: str, topic: str, **extra: object) -> None:
    """Channel `name` bound to the existing `topic` (a new channel on an existing topic)."""
    await rt.writer.apply("workflow", name, Create(dict(COMPLEX)))
    await rt.writer.apply("workflow", name, Activate())
    doc = {"name": name, "channel_type": "async", "protocol": "kafka", "workflow_id": name, "topic": topic}
    doc["config"] = {"output": True, "envelope": "quasar"}
    await rt.writer.apply("channel", name, Create({**doc, **extra}))
    await rt.writer.apply("channel", name, Activate())


def _existing_topic(rt: Runtime, keys: list[str]) -> tuple[str, list[Message]]:
    topic = f"{rt.settings.topic_prefix}legacy.{uuid.uuid4().hex[:6]}"
    ensure_channel_topic(create_admin(rt.settings), topic, 2)
    sent = [
        produce_sync(rt.producer, topic, orjson.dumps({"data": {"k": k}}), k, headers=[(H.TRACE_ID, k.encode())])
        for k in keys
    ]
    return topic, sent


async def _sentinel(rt: Runtime, channel: str, topic: str | None, count: int) -> list[str]:
    """Send one more record and read the outputs until it and at least `count` others are there; returns
    the other keys (a duplicate or a skipped record shows in them)."""
    key = f"sentinel-{uuid.uuid4().hex[:6]}"
    if topic is None:
        _send(rt, channel, [key])
    else:
        _produce(rt, topic, key)
    outs = await asyncio.to_thread(
        read_records,
        rt.settings,
        rt.names.output(channel),
        until=lambda r: key in _keys(r) and len([k for k in _keys(r) if not k.startswith("sentinel")]) >= count,
        timeout=30.0,
    )
    return [k for k in _keys(outs) if not k.startswith("sentinel")]


# -- pause / resume --------------------------------------------------------------------------------------
async def test_pause_stops_that_channel_only_and_resume_loses_and_repeats_nothing(rt: Runtime) -> None:
    await rt.activate("held")
    await rt.activate("other")
    worker = await rt.worker()
    topic = rt.names.channel("held")
    _send(rt, "held", ["a0", "a1"])
    await _outputs(rt, "held", 2)

    await set_paused(rt.reader, "held", True, "test")
    await _until(lambda: topic in worker.control.paused_topics)
    paused_keys = [f"p{i}" for i in range(10)]
    _send(rt, "held", paused_keys)
    _send(rt, "other", ["o0", "o1", "o2"])
    await _outputs(rt, "other", 3)  # the other channel is served meanwhile
    # The held channel's records were not run: its outputs are still the two from before the pause.
    held_outputs = await asyncio.to_thread(
        read_records, rt.settings, rt.names.output("held"), until=lambda r: len(r) >= 2
    )
    assert sorted(_keys(held_outputs)) == ["a0", "a1"]
    positions = await asyncio.to_thread(group_positions, create_admin(rt.settings), [(worker.group_id, topic)])
    committed = sum(max(0, c) for c, _end in positions.values())
    assert committed <= 2  # the paused records are not committed: the backlog shows as lag

    # A restarted worker obeys the pause too (the record survives on the compacted config topic).
    await worker.stop()
    rt.workers.remove(worker)
    worker = await rt.worker()
    _send(rt, "other", ["o3"])
    await asyncio.to_thread(
        read_records, rt.settings, rt.names.output("other"), until=lambda r: "o3" in _keys(r), timeout=30.0
    )
    assert topic in worker.control.paused_topics

    await set_paused(rt.reader, "held", False, "test")
    got = await _sentinel(rt, "held", None, 12)
    assert sorted(got) == sorted(["a0", "a1", *paused_keys])  # each exactly once


def _send_bulk(rt: Runtime, channel: str, keys: list[str]) -> None:
    """Produce without waiting per record: the worker gets a backlog, not a trickle."""
    topic = rt.names.channel(channel)
    for k in keys:
        rt.producer.produce(topic, orjson.dumps({"data": {"k": k}}), k.encode(), headers=[(H.TRACE_ID, k.encode())])
        rt.producer.poll(0)
    rt.producer.flush(30)


async def test_a_rebalance_keeps_a_paused_channel_paused_on_every_member(rt: Runtime) -> None:
    await rt.activate("shared")
    first = await rt.worker()
    topic = rt.names.channel("shared")
    await set_paused(rt.reader, "shared", True, "test")
    await _until(lambda: topic in first.control.paused_topics)
    second = await rt.worker()  # joins the group: a partition moves to it (cooperative rebalance)

    def owned(w: object) -> set[int]:
        consumer = w._consumer  # type: ignore[attr-defined]
        return {tp.partition for tp in consumer.assignment() if tp.topic == topic}

    # With one topic subscribed a balanced assignment gives each member a partition of it (with a second topic
    # subscribed, sticky assignment could leave both of this one's partitions with the first member).
    await _until(lambda: owned(first) and owned(second), 120)
    beat = await rt.activate("beat")  # another rebalance: sticky, so each member keeps its partition of `shared`
    # Produce once the members have created `beat`'s topic: a record sent before races the broker's own
    # creation of it (Tansu answered such a produce with an unknown broker error).
    await _until(lambda: first.view_offset >= beat and second.view_offset >= beat)
    before = first.processed + second.processed
    keys = [f"s{i}" for i in range(12)]
    _send(rt, "shared", keys)
    _send(rt, "beat", ["x0", "x1"])
    await _outputs(rt, "beat", 2)  # the members are consuming
    assert first.processed + second.processed - before == 2  # the other channel's two records only
    positions = await asyncio.to_thread(group_positions, create_admin(rt.settings), [(first.group_id, topic)])
    assert all(c <= 0 for c, _end in positions.values())  # nothing of the paused channel was committed
    await set_paused(rt.reader, "shared", False, "test")
    got = await _sentinel(rt, "shared", None, 12)
    assert sorted(got) == sorted(keys)


async def test_pauses_and_resumes_during_a_backlog_lose_and_repeat_nothing(settings: Settings, redis_url: str) -> None:
    # Deduplication in Redis makes the worker await its store per record: pause and resume land mid-batch.
    rt = Runtime(settings.model_copy(update={"redis_url": redis_url}))
    await rt.reader.ready(20)
    try:
        await _pause_resume_during_a_backlog(rt)
    finally:
        await rt.close()


async def _pause_resume_during_a_backlog(rt: Runtime) -> None:
    await rt.activate("busy", config={"deduplication": {"key_logic": {"var": "data.k"}}})
    worker = await rt.worker()
    topic = rt.names.channel("busy")
    keys = [f"b{i:05d}" for i in range(6000)]
    await set_paused(rt.reader, "busy", True, "test")  # a backlog builds up first
    await _until(lambda: topic in worker.control.paused_topics)
    await asyncio.to_thread(_send_bulk, rt, "busy", keys)
    await set_paused(rt.reader, "busy", False, "test")
    await _until(lambda: topic not in worker.control.paused_topics)
    for _ in range(5):
        await set_paused(rt.reader, "busy", True, "test")
        await _until(lambda: topic in worker.control.paused_topics)
        await set_paused(rt.reader, "busy", False, "test")
        await _until(lambda: topic not in worker.control.paused_topics)
    got = await _sentinel(rt, "busy", None, len(keys))
    assert len(got) == len(keys) and set(got) == set(keys)


# -- start_from -----------------------------------------------------------------------------------------
async def test_start_from_latest_skips_the_records_before_activation(rt: Runtime) -> None:
    topic, _old = await asyncio.to_thread(_existing_topic, rt, ["old0", "old1", "old2"])
    await _channel_on(rt, "late", topic)  # default: latest
    await rt.worker()
    produce = [f"new{i}" for i in range(3)]
    for k in produce:
        produce_sync(rt.producer, topic, orjson.dumps({"data": {}}), k, headers=[(H.TRACE_ID, k.encode())])
    got = await _sentinel(rt, "late", topic, 3)
    assert sorted(got) == produce


async def test_start_from_latest_keeps_what_was_produced_after_activation_before_a_worker_joined(
    rt: Runtime,
) -> None:
    # Kafka's auto.offset.reset=latest would start at the end seen when the worker first fetches: these
    # records, produced after the channel went live but before any worker joined, would be lost.
    topic, _old = await asyncio.to_thread(_existing_topic, rt, ["old0", "old1"])
    await _channel_on(rt, "early", topic)
    produce = [f"early{i}" for i in range(4)]
    for k in produce:
        _produce(rt, topic, k)
    await rt.worker()
    got = await _sentinel(rt, "early", topic, 4)
    assert sorted(got) == produce


async def test_start_from_earliest_reads_what_the_topic_holds(rt: Runtime) -> None:
    topic, _old = await asyncio.to_thread(_existing_topic, rt, ["old0", "old1", "old2"])
    await _channel_on(rt, "all", topic, start_from="earliest")
    await rt.worker()
    got = await _sentinel(rt, "all", topic, 3)
    assert sorted(got) == ["old0", "old1", "old2"]


async def test_start_from_a_timestamp_starts_at_the_first_record_at_or_after_it(rt: Runtime) -> None:
    topic, first = await asyncio.to_thread(_existing_topic, rt, ["t0", "t1"])
    await asyncio.sleep(0.05)  # the start time must fall strictly between two records' timestamps
    start = int(time.time() * 1000)
    await asyncio.sleep(0.05)
    _topic, second = await asyncio.to_thread(lambda: (topic, [_produce(rt, topic, k) for k in ("t2", "t3")]))
    assert max(m.timestamp()[1] for m in first) < start <= min(m.timestamp()[1] for m in second)
    iso = datetime.fromtimestamp(start / 1000, UTC).isoformat(timespec="milliseconds")
    await _channel_on(rt, "fromtime", topic, start_from=iso)
    await rt.worker()
    got = await _sentinel(rt, "fromtime", topic, 2)
    assert sorted(got) == ["t2", "t3"]


def _produce(rt: Runtime, topic: str, key: str) -> Message:
    return produce_sync(rt.producer, topic, orjson.dumps({"data": {}}), key, headers=[(H.TRACE_ID, key.encode())])


async def test_committed_offsets_win_over_start_from(rt: Runtime) -> None:
    topic, _old = await asyncio.to_thread(_existing_topic, rt, ["c0", "c1"])
    await _channel_on(rt, "kept", topic, start_from="earliest")
    worker = await rt.worker()
    await _sentinel(rt, "kept", topic, 2)
    await worker.stop()
    rt.workers.remove(worker)
    _produce(rt, topic, "c2")
    await rt.worker()  # restarts from its commits: nothing read twice
    got = await _sentinel(rt, "kept", topic, 3)
    assert sorted(got) == ["c0", "c1", "c2"]


# -- replay (seek requests) -----------------------------------------------------------------------------
async def test_replay_from_a_time_redelivers_exactly_the_records_from_then(rt: Runtime) -> None:
    await rt.activate("again")
    worker = await rt.worker()
    early = _send(rt, "again", ["r0", "r1", "r2"])
    await asyncio.sleep(0.05)  # a replay time strictly between two records' timestamps
    since = int(time.time() * 1000)
    await asyncio.sleep(0.05)
    late = _send(rt, "again", ["r3", "r4", "r5"])
    assert max(m.timestamp()[1] for m in early) < since <= min(m.timestamp()[1] for m in late)
    await _sentinel(rt, "again", None, 6)

    topic = rt.names.channel("again")
    request = SeekRequest.new("again", topic, from_ms=since, by="test")
    await request_seek(rt.reader, request)
    await _until(lambda: len(seek_applied(rt.reader, "again")) == 2)  # both partitions, once each
    got = await _sentinel(rt, "again", None, 9)
    first_pass = ["r0", "r1", "r2", "r3", "r4", "r5"]
    assert sorted(got) == sorted([*first_pass, "r3", "r4", "r5"])

    # Applied once: a restarted worker does not apply it again.
    await worker.stop()
    rt.workers.remove(worker)
    await rt.worker()
    got = await _sentinel(rt, "again", None, 9)
    assert sorted(got) == sorted([*first_pass, "r3", "r4", "r5"])


async def test_replay_from_an_offset_of_one_partition(rt: Runtime) -> None:
    await rt.activate("offs")
    await rt.worker()
    sent = _send(rt, "offs", [f"o{i}" for i in range(8)])
    await _sentinel(rt, "offs", None, 8)
    on_zero = sorted((m.offset(), m.key().decode()) for m in sent if m.partition() == 0)
    assert len(on_zero) >= 2, "keys spread over both partitions"
    start = on_zero[1][0]
    request = SeekRequest.new("offs", rt.names.channel("offs"), from_offset=start, partitions=(0,), by="test")
    await request_seek(rt.reader, request)
    await _until(lambda: 0 in seek_applied(rt.reader, "offs"))
    assert set(seek_applied(rt.reader, "offs")) == {0}  # partition 1 untouched
    again = [k for _o, k in on_zero[1:]]
    got = await _sentinel(rt, "offs", None, 8 + len(again))
    assert sorted(got) == sorted([m.key().decode() for m in sent] + again)


async def test_an_offset_past_the_end_puts_the_position_at_the_end_not_back_at_the_start(rt: Runtime) -> None:
    # Out of range, the consumer would fall back to auto.offset.reset (earliest): everything again.
    await rt.activate("far")
    await rt.worker()
    sent = _send(rt, "far", [f"f{i}" for i in range(6)])
    await _sentinel(rt, "far", None, 6)
    request = SeekRequest.new("far", rt.names.channel("far"), from_offset=10**9, by="test")
    await request_seek(rt.reader, request)
    await _until(lambda: len(seek_applied(rt.reader, "far")) == 2)
    assert all(a["offset"] < 10**9 for a in seek_applied(rt.reader, "far").values())
    got = await _sentinel(rt, "far", None, 6)
    assert sorted(got) == sorted(m.key().decode() for m in sent)  # nothing replayed
