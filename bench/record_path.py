"""The worker's per-record Python cost without consuming: `python -m bench.record_path`.

Runs the same in-memory records (Orion's complex workflow, `bench.worker`'s payload) through
- the hand-written logic plus one `produce()` per record (what `bench.worker`'s hand-written loop does
  per record, minus consuming),
- the engine alone (decode -> workflow -> response bytes),
- `ChannelWorker._process`, the worker's batch loop: pipeline, output and trace records, delivery
  tracking and reports, metrics (tracing `all` and `errors`),
producing to a real broker (embedded Tansu unless QUASAR_KAFKA_BOOTSTRAP is set) with each side's own
producer settings, and prints the *main thread's* CPU microseconds per record (`time.thread_time`), best
of alternating rounds. Consuming is left out: it costs both sides the same. Thread CPU time does not
count librdkafka's threads, the broker, or time the thread waited for a core, so the figure holds on a
busy or shared box where rates do not.

For instruction counts instead: `valgrind --tool=callgrind python -m bench.record_path --n 2000 --rounds 1
--only worker` against a running broker (QUASAR_KAFKA_BOOTSTRAP), minus a `--n 0` run for start-up.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from types import SimpleNamespace
from typing import Any

import orjson
from confluent_kafka import KafkaError, KafkaException, Producer

from bench.worker import COMPLEX_PAYLOAD, COMPLEX_WORKFLOW, complex_by_hand, engine_only

BATCH = 2000
OUTPUT = "bench.out"


class MemoryRecord:
    """A consumed record as the worker reads it (confluent's `Message` accessors), built in memory."""

    __slots__ = ("_headers", "_key", "_offset", "_partition", "_topic", "_ts", "_value")

    def __init__(
        self,
        topic: str,
        value: bytes,
        key: bytes,
        partition: int,
        offset: int,
        ts: int,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self._topic, self._value, self._key = topic, value, key
        self._partition, self._offset, self._ts = partition, offset, ts
        self._headers = headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


def _producer(bootstrap: str, worker: bool) -> Producer:
    """The worker's own producer settings, or the hand-written loop's (bench.worker's `_kafka_loop`)."""
    if not worker:
        return Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10000})
    from app.kafka.config import producer_config
    from app.settings import Settings

    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix="bench.")
    return Producer(producer_config(settings, **{"linger.ms": settings.worker_linger_ms}))


def _worker(tracing: str, producer: Producer, bootstrap: str) -> tuple[Any, list[MemoryRecord]]:
    from app.channels import compile_channel
    from app.engine import Engine, compile_workflow
    from app.kafka.names import TopicNames
    from app.settings import Settings
    from app.worker.pipeline import WorkerView, routes_of
    from app.worker.runner import ChannelWorker

    names = TopicNames("bench.")
    doc = {
        "name": "orders",
        "channel_type": "async",
        "protocol": "kafka",
        "workflow_id": "orders",
        "config": {"output": True, "envelope": "quasar", "tracing": tracing},
    }
    channel = compile_channel("orders", doc, names)

    class _Snapshot:  # what `routes_of` reads of a config snapshot
        channels = {"orders": SimpleNamespace(channel=channel, active_since_ms=0)}

    view = WorkerView(routes_of(_Snapshot(), names), Engine({"orders": [compile_workflow(COMPLEX_WORKFLOW)]}))  # type: ignore[arg-type]
    worker = ChannelWorker(Settings(kafka_bootstrap=bootstrap, topic_prefix="bench."))
    worker._worker_view = view
    worker._routes = dict(view.routes)
    worker._producer = type("Client", (), {"client": producer})()  # type: ignore[assignment]
    # Heavy-channel detection is wall-clock based: under a profiler every record would look heavy.
    worker.pipeline._classify = lambda *_: None  # type: ignore[method-assign]
    value = orjson.dumps(COMPLEX_PAYLOAD)
    now = int(time.time() * 1000)
    records = [MemoryRecord(channel.topic, value, str(i).encode(), i % 4, i, now) for i in range(BATCH)]
    return worker, records


def worker_seconds(n: int, tracing: str, bootstrap: str, producer: Producer | None = None) -> float:
    """Main-thread CPU seconds of `ChannelWorker._process` over `n` records (batches of BATCH), delivery
    reports served as the worker serves them (`poll(0)` after each batch); the heap settled as the worker
    does it (`app.heap`), so the collector costs what it costs in a running worker. A given `producer`
    stays the caller's (not flushed)."""
    from app.heap import settle_heap

    owned = producer is None
    producer = producer or _producer(bootstrap, worker=True)
    worker, records = _worker(tracing, producer, bootstrap)

    async def run() -> float:
        settle_heap()
        started = time.thread_time()
        for _ in range(max(1, n // BATCH)):
            batch = worker.tracker.batch()
            await worker._process(records, batch)  # the loop under test
            producer.poll(0)
        spent = time.thread_time() - started
        if owned:
            producer.flush(60)
        return spent

    return asyncio.run(run())


def hand_seconds(n: int, bootstrap: str) -> float:
    """Main-thread CPU seconds of the hand-written logic + one produce() per record, polled per batch."""
    producer = _producer(bootstrap, worker=False)
    value = orjson.dumps(COMPLEX_PAYLOAD)
    started = time.thread_time()
    for i in range(n):
        producer.produce(OUTPUT, complex_by_hand(value), b"%d" % i)
        if i % BATCH == 0:
            producer.poll(0)
    spent = time.thread_time() - started
    producer.flush(60)
    return spent


def _rows(args: argparse.Namespace, bootstrap: str) -> dict[str, float]:
    only = set(args.only.split(","))
    rows: dict[str, float] = {}

    def keep(name: str, seconds: float) -> None:
        rows[name] = min(rows.get(name, 1e9), seconds)

    for _ in range(args.rounds):  # alternating rounds, best of each: a neighbour's burst stays out
        if "hand" in only:
            keep("hand-written logic + produce", hand_seconds(args.n, bootstrap))
        if "engine" in only:
            keep("engine alone (decode, run, encode)", engine_only(args.n))
        if "worker" in only:
            for tracing in ("all", "errors"):
                keep(f"worker record path, tracing {tracing}", worker_seconds(args.n, tracing, bootstrap))
    return rows


def main(argv: list[str] | None = None) -> int:
    from app.kafka.names import TopicNames
    from bench.worker import _broker, _create_topics

    parser = argparse.ArgumentParser(prog="python -m bench.record_path", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="hand,engine,worker", help="comma list of: hand, engine, worker")
    args = parser.parse_args(argv)
    with _broker() as bootstrap:
        names = TopicNames("bench.")
        try:
            _create_topics(bootstrap, [OUTPUT, names.output("orders"), names.traces, names.dlq], 4)
        except KafkaException as exc:  # a broker given by QUASAR_KAFKA_BOOTSTRAP may have them from a run before
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise
        rows = _rows(args, bootstrap)
    if args.n <= 0:
        return 0
    hand = rows.get("hand-written logic + produce")
    for name, seconds in rows.items():
        ratio = f"  hand/this {hand / seconds:.2f}" if hand else ""
        print(f"{name:<40} {seconds / args.n * 1e6:8.2f} us/record{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
