"""The channel worker against the real broker: async + sync paths, deadlines, causal consistency, restarts."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator

import orjson
import pytest

from app.config_store import ConfigReader
from app.kafka import headers as H
from app.settings import Settings
from app.worker import metrics as M
from tests.runtime.worker_support import COMPLEX, Runtime, read_records


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings.model_copy(update={"worker_retry_backoff_ms": 10}))
    await runtime.reader.ready(20)
    yield runtime
    await runtime.close()


async def _until(cond: object, seconds: float = 20.0) -> None:
    """Wait for an in-process condition (a worker counter), bounded."""
    deadline = time.monotonic() + seconds
    while not cond():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.005)


async def test_async_channel_results_go_to_output_and_traces(rt: Runtime) -> None:
    await rt.activate("orders")
    await rt.worker()
    ids = [f"req-{i}" for i in range(20)]
    for rid in ids:
        rt.send(
            "orders",
            {"data": {"amount": 750}, "metadata": {"rid": rid}},
            key=rid,
            headers={H.REQUEST_ID: rid, H.TRACE_ID: rid, H.MODE: "async"},  # as the gateway's async path sends
        )
    outs = await asyncio.to_thread(rt.outputs, "orders", 20)
    bodies = {m.key().decode(): orjson.loads(m.value()) for m in outs}
    assert set(bodies) == set(ids)
    for rid, body in bodies.items():
        assert body["status"] == "ok" and body["id"] == rid
        # Orion semantics: without parse_json, data.* is null -> the "standard" tier
        assert body["data"]["order"] == {"tier": "standard", "rid": rid}
    traces = await asyncio.to_thread(rt.traces, lambda r: len(r) >= 20)
    trace = orjson.loads(next(m.value() for m in traces if m.key() == b"req-3"))
    assert trace["status"] == "completed" and trace["channel"] == "orders" and trace["mode"] == "async"
    assert trace["result"] == bodies["req-3"]
    assert trace["duration_ms"] >= 0 and trace["created_at"].endswith("Z")


async def test_sync_request_gets_reply_on_the_named_partition(rt: Runtime) -> None:
    await rt.activate("quotes", channel_type="sync", output=False)
    await rt.worker()
    cid = uuid.uuid4().hex
    rt.send(
        "quotes",
        {"data": {"amount": 5}},
        headers={H.REPLY_TO: f"{rt.names.replies}:2", H.CORRELATION_ID: cid, H.MODE: "sync"},
    )
    replies = await asyncio.to_thread(
        read_records, rt.settings, rt.names.replies, until=lambda r: len(r) >= 1, partitions=[2]
    )
    (reply,) = replies
    assert reply.partition() == 2 and reply.key() == cid.encode()
    assert H.header_map(reply.headers())[H.STATUS] == "200"
    body = orjson.loads(reply.value())
    assert body["status"] == "ok" and body["data"]["order"]["tier"] == "standard"
    # A sync channel has no output topic: nothing may have been written there.
    assert rt.names.output("quotes") not in {m.topic() for m in replies}


async def test_expired_deadline_is_skipped_counted_and_traced(rt: Runtime) -> None:
    await rt.activate("late")
    await rt.worker()
    before = M.EXPIRED.labels("late")._value.get()
    past = str(int(time.time() * 1000) - 1000)
    rt.send("late", {"data": {}}, headers={H.DEADLINE: past, H.TRACE_ID: "expired-1"})
    future = str(int(time.time() * 1000) + 60_000)
    rt.send("late", {"data": {}}, key="fresh-1", headers={H.DEADLINE: future, H.TRACE_ID: "fresh-1"})
    # Only the expired one is traced: a Kafka-ingested success is not, under the default `tracing`.
    traces = await asyncio.to_thread(rt.traces, lambda r: b"expired-1" in {m.key() for m in r})
    expired = orjson.loads(next(m.value() for m in traces if m.key() == b"expired-1"))
    assert expired["status"] == "failed" and expired["error"]["code"] == "DEADLINE_EXCEEDED"
    outs = await asyncio.to_thread(rt.outputs, "late", 1)
    assert [m.key() for m in outs] == [b"fresh-1"]  # the expired request produced no result (outputs keep the key)
    assert M.EXPIRED.labels("late")._value.get() == before + 1


async def test_new_channel_is_picked_up_without_restart(rt: Runtime) -> None:
    await rt.activate("first")
    worker = await rt.worker()
    offset = await rt.activate("second")
    # The worker creates the new channel's topic: a record sent before races the broker's own creation of it.
    await _until(lambda: worker.view_offset >= offset)
    rt.send("second", {"data": {"n": 1}}, key="s-1", headers={H.CONFIG_OFFSET: str(offset), H.TRACE_ID: "s-1"})
    outs = await asyncio.to_thread(rt.outputs, "second", 1)
    assert outs[0].key() == b"s-1"
    assert rt.names.channel("second") in worker._subscribed


async def test_request_waits_for_the_config_position_it_was_sent_under(rt: Runtime) -> None:
    await rt.activate("causal")
    # The worker's own config reader lags on purpose: on Tansu a fetch is answered after its max wait.
    lagging = ConfigReader(rt.settings.model_copy(update={"fetch_wait_max_ms": 700}), name="lagging")
    await rt.worker(reader=lagging)
    v2 = {**COMPLEX, "tasks": [*COMPLEX["tasks"], _mark("v2")]}
    offset = await rt.new_workflow_version("causal", v2)
    assert lagging.applied_offset < offset  # really behind when the request arrives
    rt.send("causal", {"data": {}}, headers={H.CONFIG_OFFSET: str(offset), H.TRACE_ID: "c-1"})
    (out,) = await asyncio.to_thread(rt.outputs, "causal", 1)
    assert orjson.loads(out.value())["data"]["version"] == "v2"
    await lagging.stop()


async def test_restart_resumes_from_committed_offsets_without_loss(rt: Runtime) -> None:
    await rt.activate("steady")
    total = 600
    ids = [f"r{i}" for i in range(total)]
    for rid in ids:
        rt.send("steady", {"data": {}}, key=rid, headers={H.TRACE_ID: rid})
    first = await rt.worker(batch_size=50)
    await _until(lambda: first.processed >= 50)
    await first.abort()  # crash: whatever was not committed yet is redelivered
    rt.workers.remove(first)
    assert first.processed < total, "the first worker finished everything: not a mid-stream stop"
    second = await rt.worker()
    outs = await asyncio.to_thread(
        read_records,
        rt.settings,
        rt.names.output("steady"),
        until=lambda r: {m.key().decode() for m in r} >= set(ids),
        timeout=30,
    )
    keys = [m.key().decode() for m in outs]
    assert set(keys) == set(ids)  # every request has a result
    duplicates = len(keys) - len(set(keys))
    # At-least-once: duplicates only come from the uncommitted tail of the first worker.
    assert duplicates <= first.processed
    assert second.processed >= total - first.processed


def _mark(version: str) -> dict[str, object]:
    return {
        "id": f"mark_{version}",
        "name": "mark",
        "function": {"name": "map", "input": {"mappings": [{"path": "data.version", "logic": version}]}},
    }


async def test_an_implausible_config_position_is_not_waited_for(rt: Runtime) -> None:
    """Issue 14 (Low): a forged `quasar-config-offset` far in the future used to hold the record ~5 s and then
    dead-letter it (CONFIG_LAG); it is now run at once on the current config."""
    await rt.activate("forged-offset")
    worker = await rt.worker()
    # Far ahead of anything the config log holds: not waited for. Just ahead: waited for, as before.
    assert not worker._behind("999999999999")
    assert worker._behind(str(worker.view_offset + 1))
    rt.send("forged-offset", {"data": {}}, key="f-1", headers={H.CONFIG_OFFSET: "999999999999", H.TRACE_ID: "f-1"})
    (out,) = await asyncio.to_thread(rt.outputs, "forged-offset", 1)
    assert out.key() == b"f-1"
    assert orjson.loads(out.value())["status"] == "ok"


async def test_the_worker_stops_consuming_at_its_uncommitted_records_bound(settings: Settings) -> None:
    """QUASAR_WORKER_MAX_UNCOMMITTED_RECORDS: the consume loop takes no batch while that many records wait for
    their commit, so a crash never repeats more than the bound plus one batch; every record still gets its
    result."""
    rt = Runtime(settings.model_copy(update={"worker_max_uncommitted_records": 100}))
    await rt.reader.ready(20)
    try:
        await rt.activate("bounded")
        ids = [f"b{i}" for i in range(600)]
        for rid in ids:
            rt.send("bounded", {"data": {}}, key=rid, headers={H.TRACE_ID: rid})
        worker = await rt.worker(batch_size=50)
        peak = 0
        deadline = time.monotonic() + 60
        while sum(worker.committed.values()) < len(ids):
            assert time.monotonic() < deadline, f"not all committed: {worker.committed}"
            peak = max(peak, worker.tracker.uncommitted)
            await asyncio.sleep(0.002)
        assert 0 < peak < 100 + 50
        outs = await asyncio.to_thread(rt.outputs, "bounded", len(ids))
        assert {m.key().decode() for m in outs} == set(ids)
    finally:
        await rt.close()
