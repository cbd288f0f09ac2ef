"""The worker's per-record Python cost without a broker: `python -m bench.record_path`.

Runs the same in-memory records (Orion's complex workflow, `bench.worker`'s payload) through
- the hand-written logic plus one `produce()` per record (what `bench.worker`'s hand-written loop does
  per record, minus consuming),
- the engine alone (decode -> workflow -> response bytes),
- `ChannelWorker._process`, the worker's batch loop: pipeline, output and trace records, delivery
  tracking, metrics (tracing `all` and `errors`),
with real confluent-kafka producers that never reach a broker (produce() only enqueues), and prints CPU
microseconds per record, best of alternating rounds. Consuming is left out: it costs both sides the same.

The numbers move with the box's load; for a repeatable figure count instructions with callgrind, e.g.
`valgrind --tool=callgrind python -m bench.record_path --n 2000 --rounds 1 --only worker` (the run's total
over the records, minus a `--n 0` run for start-up).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from types import SimpleNamespace
from typing import Any

import orjson
from confluent_kafka import Producer

from bench.worker import COMPLEX_PAYLOAD, COMPLEX_WORKFLOW, complex_by_hand, engine_only

BATCH = 2000


class _Record:
    """A consumed record as the worker reads it (confluent's `Message` accessors)."""

    __slots__ = ("_key", "_offset", "_partition", "_topic", "_ts", "_value")

    def __init__(self, topic: str, value: bytes, key: bytes, partition: int, offset: int, ts: int) -> None:
        self._topic, self._value, self._key = topic, value, key
        self._partition, self._offset, self._ts = partition, offset, ts

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

    def headers(self) -> None:
        return None

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


def _producer() -> Producer:
    # Nothing listens there: produce() enqueues and the queue is large enough for every run.
    return Producer(
        {
            "bootstrap.servers": "127.0.0.1:9",
            "queue.buffering.max.messages": 2_000_000,
            "queue.buffering.max.kbytes": 2_000_000,
            "message.timeout.ms": 600_000,
            "log_level": 0,
        }
    )


def _worker(tracing: str, producer: Producer) -> tuple[Any, list[_Record]]:
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
    worker = ChannelWorker(Settings(kafka_bootstrap="127.0.0.1:9", topic_prefix="bench."))
    worker._worker_view = view
    worker._routes = dict(view.routes)
    worker._producer = type("Client", (), {"client": producer})()  # type: ignore[assignment]
    # Heavy-channel detection is wall-clock based: under a profiler every record would look heavy.
    worker.pipeline._classify = lambda *_: None  # type: ignore[method-assign]
    value = orjson.dumps(COMPLEX_PAYLOAD)
    now = int(time.time() * 1000)
    records = [_Record(channel.topic, value, str(i).encode(), i % 4, i, now) for i in range(BATCH)]
    return worker, records


def worker_seconds(n: int, tracing: str, producer: Producer) -> float:
    """CPU seconds of `ChannelWorker._process` over `n` records (batches of BATCH)."""
    worker, records = _worker(tracing, producer)

    async def run() -> float:
        started = time.process_time()
        for _ in range(max(1, n // BATCH)):
            batch = worker.tracker.batch()
            await worker._process(records, batch)  # the loop under test
            producer.poll(0)
        return time.process_time() - started

    return asyncio.run(run())


def hand_seconds(n: int, producer: Producer) -> float:
    """CPU seconds of the hand-written logic + one produce() per record."""
    value = orjson.dumps(COMPLEX_PAYLOAD)
    started = time.process_time()
    for i in range(n):
        producer.produce("bench.out", complex_by_hand(value), b"%d" % i)
        if i % BATCH == 0:
            producer.poll(0)
    return time.process_time() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.record_path", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="hand,engine,worker", help="comma list of: hand, engine, worker")
    args = parser.parse_args(argv)
    only = set(args.only.split(","))
    producer = _producer()
    rows: dict[str, float] = {}
    for _ in range(args.rounds):  # alternating rounds, best of each: a neighbour's burst stays out
        if "hand" in only:
            rows["hand-written logic + produce"] = min(
                rows.get("hand-written logic + produce", 1e9), hand_seconds(args.n, producer)
            )
        if "engine" in only:
            rows["engine alone (decode, run, encode)"] = min(
                rows.get("engine alone (decode, run, encode)", 1e9), engine_only(args.n)
            )
        if "worker" in only:
            for tracing in ("all", "errors"):
                name = f"worker record path, tracing {tracing}"
                rows[name] = min(rows.get(name, 1e9), worker_seconds(args.n, tracing, producer))
    if args.n <= 0:
        return 0
    hand = rows.get("hand-written logic + produce")
    for name, seconds in rows.items():
        ratio = f"  hand/this {hand / seconds:.2f}" if hand else ""
        print(f"{name:<40} {seconds / args.n * 1e6:8.2f} us/record{ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
