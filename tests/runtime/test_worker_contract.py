"""The worker keeps Kafka's contract, on the real broker: per-key order under IO, side effects once per
delivery, transient retries that hold their key back, reply-to confined to reply topics, Orion's raw
records and the publish_kafka bridge with default settings."""

from __future__ import annotations

import asyncio
import itertools
import random
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web
from confluent_kafka import Message

from app.config_store import Create
from app.kafka import headers as H
from app.settings import Settings
from app.worker import metrics as M
from tests.runtime.worker_support import Runtime, read_records


class Upstream:
    """A loopback HTTP service: `/work` answers after a random delay and logs the arrival order per key;
    `/charge` counts POSTs; `/status/<code>` answers that code; `/flaky/warming*` fails its first 2 calls."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[int]] = defaultdict(list)
        self.charges = 0
        self.flaky: dict[str, int] = defaultdict(int)
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._random = random.Random(12)

    async def start(self) -> Upstream:
        app = web.Application()
        app.router.add_post("/work", self._work)
        app.router.add_post("/charge", self._charge)
        app.router.add_get("/status/{code}", self._status)
        app.router.add_get("/flaky/{id}", self._flaky)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.2)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        assert site._server is not None
        self.port = site._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _work(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.arrivals[body["k"]].append(body["seq"])
        await asyncio.sleep(self._random.uniform(0, 0.03))  # random upstream latency
        return web.json_response({"seq": body["seq"]})

    async def _charge(self, request: web.Request) -> web.Response:
        self.charges += 1
        return web.json_response({"charged": True})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "bad"}, status=int(request.match_info["code"]))

    async def _flaky(self, request: web.Request) -> web.Response:
        rid = request.match_info["id"]
        self.flaky[rid] += 1
        if rid.startswith("warming") and self.flaky[rid] <= 2:
            return web.json_response({"error": "warming up"}, status=503)
        return web.json_response({"ok": rid})


@pytest.fixture
async def rt(settings: Settings) -> AsyncIterator[Runtime]:
    runtime = Runtime(settings.model_copy(update={"worker_retry_backoff_ms": 20, "worker_max_attempts": 4}))
    await runtime.reader.ready(20)
    yield runtime
    await runtime.close()


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    server = await Upstream().start()
    yield server
    await server.stop()


async def _connector(rt: Runtime, upstream: Upstream) -> None:
    cfg = {"url": f"http://127.0.0.1:{upstream.port}", "allow_private_urls": True, "retry": {"max_retries": 0}}
    await rt.writer.apply("connector", "api", Create({"name": "api", "connector_type": "http", "config": cfg}))


def _task(task_id: str, function: str, **inp: Any) -> dict[str, Any]:
    return {"id": task_id, "name": task_id, "function": {"name": function, "input": inp}}


PARSE = _task("parse", "parse_json", source="payload", target="in")


def _workflow(*tasks: dict[str, Any]) -> dict[str, Any]:
    return {"name": "contract", "condition": True, "tasks": [PARSE, *tasks]}


def _inversions(outputs: list[Message]) -> tuple[int, int]:
    """(adjacent inversions of `seq` per key in output order, records seen)."""
    by_key: dict[bytes, list[int]] = defaultdict(list)
    for m in sorted(outputs, key=lambda m: (m.partition(), m.offset())):
        by_key[m.key()].append(orjson.loads(m.value())["data"]["in"]["seq"])
    inversions = sum(1 for seqs in by_key.values() for a, b in itertools.pairwise(seqs) if b < a)
    return inversions, sum(len(s) for s in by_key.values())


async def test_same_key_order_is_kept_when_the_workflow_awaits_io(rt: Runtime, upstream: Upstream) -> None:
    await _connector(rt, upstream)
    call = _task("work", "http_call", connector="api", method="POST", path="/work", body_logic={"var": "data.in"})
    # Defaults of a Kafka channel: raw envelope (the whole value is the payload).
    await rt.activate("ordered", _workflow(call), envelope=None)
    await rt.worker()
    keys, per_key = [f"cust-{c}" for c in "ABCDE"], 110
    for seq in range(per_key):
        for k in keys:
            rt.send("ordered", {"k": k, "seq": seq}, key=k)
    total = len(keys) * per_key
    outputs = await asyncio.to_thread(rt.outputs, "ordered", total, 90)
    inversions, seen = _inversions(outputs)
    assert seen >= total >= 500
    assert inversions == 0
    for k in keys:  # the upstream saw every key's calls in order too (one at a time per key)
        assert upstream.arrivals[k] == sorted(upstream.arrivals[k]) and len(upstream.arrivals[k]) >= per_key


async def test_a_slow_upstream_does_not_pull_the_backlog_into_memory(rt: Runtime, upstream: Upstream) -> None:
    # Review finding: the consume loop never waited for its record tasks, so with an IO workflow the whole
    # backlog became tasks holding their records (memory grew until the process died).
    await _connector(rt, upstream)
    call = _task("work", "http_call", connector="api", method="POST", path="/work", body_logic={"var": "data.in"})
    await rt.activate("backlog", _workflow(call), envelope=None)
    total = 300
    for seq in range(total):  # distinct keys: nothing serializes them but the bound
        rt.send("backlog", {"k": f"k{seq}", "seq": seq}, key=f"k{seq}")
    worker = await rt.worker(batch_size=10, max_in_flight=4, max_outstanding=20)
    outputs = await asyncio.to_thread(rt.outputs, "backlog", total, 120)
    assert len({m.key() for m in outputs}) == total  # every record processed
    assert 0 < worker.outstanding_peak <= worker.max_outstanding + worker.batch_size


async def test_side_effect_runs_once_per_delivery_when_a_later_task_fails(rt: Runtime, upstream: Upstream) -> None:
    await _connector(rt, upstream)
    charge = _task("charge", "http_call", connector="api", method="POST", path="/charge", body={"x": 1})
    status = _task("status", "http_call", connector="api", method="GET", path="/status/500")
    await rt.activate("charging", _workflow(charge, status), envelope=None)
    await rt.worker()
    rt.send("charging", {"order": 1}, key="o-1")
    (dead,) = await asyncio.to_thread(rt.dlq, 1, 30)
    hm = H.header_map(dead.headers())
    assert upstream.charges == 1  # 500 is transient, but the charge already happened: not re-run
    assert hm[H.DLQ_TASK_ID] == "status" and hm[H.DLQ_CLASS_NAME] == "http_call"
    assert "already completed" in hm[H.DLQ_ERROR_MESSAGE] and hm[H.DLQ_ATTEMPTS] == "1"


async def test_transient_failure_is_retried_and_holds_back_its_key(rt: Runtime, upstream: Upstream) -> None:
    await _connector(rt, upstream)
    flaky = _task(
        "get", "http_call", connector="api", method="GET", path_logic={"cat": ["/flaky/", {"var": "data.in.id"}]}
    )
    await rt.activate("retrying", _workflow(flaky), envelope=None)
    before = M.RETRIES.labels("retrying")._value.get()
    await rt.worker()
    rt.send("retrying", {"id": "warming", "seq": 0}, key="same")  # fails twice (503), then succeeds
    rt.send("retrying", {"id": "ready", "seq": 1}, key="same")  # would succeed at once, but waits its turn
    outputs = await asyncio.to_thread(rt.outputs, "retrying", 2, 30)
    assert [orjson.loads(m.value())["data"]["in"]["id"] for m in outputs] == ["warming", "ready"]
    assert upstream.flaky == {"warming": 3, "ready": 1}
    assert M.RETRIES.labels("retrying")._value.get() == before + 2


async def test_reply_to_outside_the_reply_topics_writes_nothing_there(rt: Runtime) -> None:
    await rt.activate("victim")
    await rt.activate("target")
    await rt.worker()
    victim_topic = rt.names.channel("victim")
    for target in (f"{victim_topic}:0", f"{rt.names.config}:0"):
        rt.send("target", {"data": {}}, headers={H.REPLY_TO: target, H.CORRELATION_ID: uuid.uuid4().hex})
    dead = await asyncio.to_thread(rt.dlq, 2)
    assert {H.header_map(d.headers())[H.DLQ_ERROR_CODE] for d in dead} == {"REPLY_TO_REFUSED"}
    # Nothing reached the victim channel: its topic holds only the marker produced now.
    marker = rt.send("victim", {"data": {"marker": True}}, key="marker")
    records = await asyncio.to_thread(
        read_records, rt.settings, victim_topic, until=lambda r: any(m.key() == b"marker" for m in r)
    )
    assert [(m.partition(), m.offset()) for m in records] == [(marker.partition(), marker.offset())]


async def test_plain_json_record_on_a_kafka_channel_is_processed_with_kafka_metadata(rt: Runtime) -> None:
    meta = _task("meta", "map", mappings=[{"path": "data.meta", "logic": {"var": "metadata"}}])
    await rt.activate("plain", _workflow(meta), envelope=None)
    await rt.worker()
    sent = rt.send("plain", {"order_id": "K-1", "amount": 12}, key="K-1")
    (out,) = await asyncio.to_thread(rt.outputs, "plain", 1)
    body = orjson.loads(out.value())
    assert out.key() == b"K-1" and body["data"]["in"] == {"order_id": "K-1", "amount": 12}
    assert body["data"]["meta"]["kafka_topic"] == rt.names.channel("plain")
    assert (body["data"]["meta"]["kafka_partition"], body["data"]["meta"]["kafka_offset"]) == (
        sent.partition(),
        sent.offset(),
    )
    assert body["data"]["meta"]["kafka_key"] == "K-1"


async def test_publish_kafka_bridges_one_kafka_channel_to_another_with_default_settings(rt: Runtime) -> None:
    bus = {"name": "bus", "connector_type": "kafka", "config": {"type": "kafka", "brokers": ["unused:9092"]}}
    await rt.writer.apply("connector", "bus", Create(bus))
    await rt.activate(
        "back", _workflow(_task("mark", "map", mappings=[{"path": "data.back", "logic": True}])), envelope=None
    )
    publish = _task(
        "publish", "publish_kafka", connector="bus", topic=rt.names.channel("back"), key_logic={"var": "data.in.id"}
    )
    await rt.activate("front", _workflow(publish), envelope=None)
    await rt.worker()
    rt.send("front", {"id": "B-1", "amount": 3}, key="B-1")
    (out,) = await asyncio.to_thread(rt.outputs, "back", 1, 30)
    body = orjson.loads(out.value())
    assert out.key() == b"B-1" and body["data"]["back"] is True
    assert body["data"]["in"]["in"] == {"id": "B-1", "amount": 3}  # front's data, as publish_kafka wrote it
