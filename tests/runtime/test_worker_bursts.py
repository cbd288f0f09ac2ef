"""The worker's batch loop produces inline successes in bursts (runner.EMIT_BURST): every record a batch
caused is produced before `_process` returns, in record order, keys kept; a record awaiting a reply is
produced at once (its caller waits); anything that can suspend or produce out of band sees the earlier
successes produced first. No broker: the producer records its calls."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from app.channels import compile_channel
from app.engine import Engine, compile_workflow
from app.kafka import headers as H
from app.kafka.names import TopicNames
from app.settings import Settings
from app.worker import runner as R
from app.worker.pipeline import WorkerView, routes_of
from app.worker.runner import ChannelWorker
from bench.record_path import MemoryRecord

NAMES = TopicNames("t.")
WORKFLOW = {
    "id": "orders",
    "name": "orders",
    "tasks": [
        {
            "id": "mark",
            "name": "mark",
            "function": {"name": "map", "input": {"mappings": [{"path": "data.seen", "logic": True}]}},
        },
    ],
}


def _record(offset: int, *, key: bytes, headers: list[tuple[str, bytes]] | None = None) -> MemoryRecord:
    # a key starting with "fail" carries a value that is not JSON: dead-lettered (DECODE_ERROR)
    value = b"{not json" if key.startswith(b"fail") else orjson.dumps({"data": {"n": offset}})
    return MemoryRecord(NAMES.channel("orders"), value, key, 0, offset, 1, headers)


class _Producer:
    """Records every produce() with how many records the pipeline had handled by then."""

    def __init__(self, handled: list[int]) -> None:
        self.handled = handled
        self.sent: list[tuple[str, bytes | None, Any, int]] = []

    def produce(self, topic: str, value: bytes | None, key: Any, **_: Any) -> None:
        self.sent.append((topic, value, key, self.handled[0]))

    def poll(self, _timeout: float = 0) -> int:
        return 0


def _worker() -> tuple[ChannelWorker, _Producer]:
    doc = {
        "name": "orders",
        "channel_type": "async",
        "protocol": "kafka",
        "workflow_id": "orders",
        "config": {"output": True, "envelope": "quasar", "tracing": "off"},
    }
    channel = compile_channel("orders", doc, NAMES)
    snapshot = SimpleNamespace(channels={"orders": SimpleNamespace(channel=channel, active_since_ms=0)})
    view = WorkerView(
        routes_of(snapshot, NAMES),  # type: ignore[arg-type]
        Engine({"orders": [compile_workflow(WORKFLOW)]}),
        reply_topics={NAMES.replies: 1},
    )
    worker = ChannelWorker(Settings(kafka_bootstrap="127.0.0.1:9", topic_prefix="t."))
    worker._worker_view = view
    worker._routes = dict(view.routes)
    handled = [0]
    producer = _Producer(handled)
    worker._producer = SimpleNamespace(client=producer)  # type: ignore[assignment]
    worker.pipeline._classify = lambda *_: None  # type: ignore[method-assign]
    handle = worker.pipeline.handle

    async def counting(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handle(*args, **kwargs)
        finally:
            handled[0] += 1

    worker.pipeline.handle = counting  # type: ignore[method-assign]
    return worker, producer


def _process(worker: ChannelWorker, records: list[MemoryRecord]) -> None:
    async def run() -> None:
        await worker._process(records, worker.tracker.batch())  # type: ignore[arg-type]

    asyncio.run(run())


def test_a_batch_larger_than_a_burst_is_produced_whole_in_order_with_its_keys() -> None:
    worker, producer = _worker()
    n = R.EMIT_BURST * 3 + 5
    _process(worker, [_record(i, key=b"k%d" % (i % 7)) for i in range(n)])
    outputs = [s for s in producer.sent if s[0] == NAMES.output("orders")]
    assert [orjson.loads(v)["data"]["seen"] for _, v, _, _ in outputs] == [True] * n
    assert [k for _, _, k, _ in outputs] == [b"k%d" % (i % 7) for i in range(n)]
    # produced in bursts, not one by one: the first output left only once a burst was full
    assert outputs[0][3] == R.EMIT_BURST


def test_a_record_awaiting_a_reply_is_produced_before_the_next_record_runs() -> None:
    worker, producer = _worker()
    sync = [(H.REPLY_TO, f"{NAMES.replies}:0".encode()), (H.CORRELATION_ID, b"c-1")]
    records = [_record(0, key=b"a"), _record(1, key=b"b", headers=sync), _record(2, key=b"c")]
    _process(worker, records)
    replies = [s for s in producer.sent if s[0] == NAMES.replies]
    assert len(replies) == 1 and replies[0][2] == "c-1"  # the correlation id keys the reply
    assert replies[0][3] == 2  # produced right after the second record, before the third ran
    outputs = [s for s in producer.sent if s[0] == NAMES.output("orders")]
    assert [k for _, _, k, _ in outputs] == [b"a", b"b", b"c"]
    assert [s[3] for s in outputs[:2]] == [2, 2]  # the earlier success went out with it, in order


@pytest.mark.parametrize("failing", [0, 5])
def test_a_dead_letter_follows_the_successes_before_it(failing: int) -> None:
    worker, producer = _worker()
    records = [_record(i, key=b"fail" if i == failing else b"k%d" % i) for i in range(8)]
    _process(worker, records)
    topics = [s[0] for s in producer.sent]
    dlq = topics.index(NAMES.dlq)
    outputs_before = [t for t in topics[:dlq] if t == NAMES.output("orders")]
    assert len(outputs_before) == failing  # every earlier success was produced before the dead letter
    assert topics.count(NAMES.output("orders")) == 7
