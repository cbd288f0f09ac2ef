"""`processing_guarantee: exactly_once` on the real embedded broker (Tansu): refused, clearly, everywhere.

Tansu answers every transaction request (InitProducerId, AddPartitionsToTxn, TxnOffsetCommit, EndTxn) but
keeps the records of aborted transactions visible to read_committed consumers, so a check of the API alone
would pass and exactly-once would silently be at-least-once. The probe writes a record, aborts it, writes
another, commits it, and reads both back read_committed. With QUASAR_KAFKA_BOOTSTRAP pointing at a broker
with transactions (Apache Kafka, Redpanda), the same tests assert that the probe passes instead.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from app.kafka import headers as H
from app.kafka.admin import create_admin
from app.kafka.config import consumer_config, producer_config, reader_config
from app.kafka.consumer import read_to_end
from app.kafka.names import TopicNames
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.observability import metrics as M
from app.settings import Settings
from app.worker import transactions
from app.worker.runner import ChannelWorker
from app.worker.transactions import TransactionsUnsupported, probe_transactions
from bench.faults import quasar_env
from tests.runtime.worker_support import Runtime

# The embedded broker is what the suite runs on unless an external one is named.
EMBEDDED = not os.environ.get("QUASAR_KAFKA_BOOTSTRAP")


def _exactly_once(settings: Settings) -> Settings:
    apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings))
    return settings.model_copy(update={"processing_guarantee": "exactly_once"})


def test_the_probe_refuses_a_broker_that_shows_aborted_records(settings: Settings) -> None:
    eos = _exactly_once(settings)
    if not EMBEDDED:
        probe_transactions(eos)  # a broker with transactions passes
        return
    with pytest.raises(TransactionsUnsupported) as caught:
        probe_transactions(eos)
    message = str(caught.value)
    assert "aborted transactions" in message and "read_committed" in message
    assert "QUASAR_PROCESSING_GUARANTEE=exactly_once" in message and "at_least_once" in message
    assert "embedded broker (Tansu)" in message
    # What the probe wrote: `__marker__/` tombstones only, which every reader of the traces topic skips.
    traces = TopicNames(eos.topic_prefix).traces
    seen: list[tuple[bytes | None, bytes | None]] = []
    reader = Consumer(reader_config(eos))
    try:
        read_to_end(
            Producer(producer_config(eos, **{"linger.ms": 0})),
            reader,
            traces,
            0,
            0,
            on_message=lambda m: seen.append((m.key(), m.value())),
        )
    finally:
        reader.close()
    assert seen and all(key is not None and key.startswith(b"__marker__/") and value is None for key, value in seen)


async def test_the_worker_refuses_to_start(settings: Settings) -> None:
    worker = ChannelWorker(_exactly_once(settings))
    try:
        if EMBEDDED:
            with pytest.raises(TransactionsUnsupported, match="aborted transactions"):
                await asyncio.wait_for(worker.start(), 120)
        else:
            await asyncio.wait_for(worker.start(), 120)
            assert worker.transactions is not None
    finally:
        await worker.abort()


@pytest.mark.parametrize("processes", ["1", "2"])
def test_quasar_worker_exits_with_a_clear_message(settings: Settings, processes: str) -> None:
    eos = _exactly_once(settings)
    env = quasar_env(eos, QUASAR_PROCESSING_GUARANTEE="exactly_once", QUASAR_WORKER_METRICS_PORT="0")
    argv = [sys.executable, "-m", "app.cli", "worker", "--processes", processes, "--instance-id", "eos-test"]
    if not EMBEDDED:
        return  # a broker with transactions: the worker would run (covered by the worker test above)
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, check=False)
    assert done.returncode == 2, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if "refusing to run" in line]
    assert len(lines) == 1, done.stderr[-3000:]
    assert "QUASAR_PROCESSING_GUARANTEE=exactly_once" in lines[0] and "Tansu" in lines[0]
    assert "Traceback" not in done.stderr
    assert "processes (pids" not in done.stderr  # refused by the parent, before any child started


async def test_the_transactional_worker_runs_end_to_end_on_the_broker_protocol(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Tansu speaks the whole transaction protocol; only the isolation of aborted records is missing. With the
    start-up check bypassed (here only), the real worker's transactional path runs against a real broker:
    init_transactions, begin, produce, send_offsets_to_transaction, commit. Every result arrives once, a
    bad record's dead letter too, and the group's committed offsets are those the transactions carried."""
    monkeypatch.setattr(transactions, "probe_transactions", lambda *args, **kwargs: None)
    rt = Runtime(settings.model_copy(update={"processing_guarantee": "exactly_once", "worker_commit_interval_ms": 50}))
    await rt.reader.ready(20)
    try:
        await rt.activate("orders")
        worker = await rt.worker()
        assert worker.transactions is not None and worker._committer is None  # no plain commits
        before = M.TRANSACTIONS.labels("committed")._value.get()
        ids = [f"eos-{i}" for i in range(20)]
        for rid in ids:
            rt.send("orders", {"data": {"amount": 5}, "metadata": {"rid": rid}}, key=rid, headers={H.TRACE_ID: rid})
        rt.send("orders", b"{not json", key="bad-1")
        outs = await asyncio.to_thread(rt.outputs, "orders", 20)
        assert sorted(m.key().decode() for m in outs) == sorted(ids)
        (dead,) = await asyncio.to_thread(rt.dlq, 1)
        assert dead.key() == b"bad-1"
        topic = rt.names.channel("orders")
        positions = await asyncio.to_thread(_group_positions, rt.settings, worker.group_id, topic)
        deadline = time.monotonic() + 20
        while sum(positions.values()) < 21:  # committed with the transaction that carried the last record
            assert time.monotonic() < deadline, f"offsets not committed: {positions}"
            await asyncio.sleep(0.2)
            positions = await asyncio.to_thread(_group_positions, rt.settings, worker.group_id, topic)
        assert positions == {p: o for (t, p), o in worker.committed.items() if t == topic}
        assert M.TRANSACTIONS.labels("committed")._value.get() > before
    finally:
        await rt.close()


def _group_positions(settings: Settings, group: str, topic: str) -> dict[int, int]:
    """The group's committed offsets on `topic` as the broker has them (next offset per partition)."""
    consumer = Consumer(consumer_config(settings, group_id=group))
    try:
        parts = [TopicPartition(topic, p) for p in range(settings.default_partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, timeout=10) if tp.offset >= 0}
    finally:
        consumer.close()


async def test_a_second_worker_with_the_same_instance_id_fences_the_first(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Same instance id -> same transactional id: the newer producer fences the older one on the broker (Tansu
    does fence). The fenced worker stops with PRODUCER_FENCED (its process exits and the supervisor restarts it);
    the newer one keeps running.

    What the survivor does next is not asserted here: Tansu never ends the transaction the fenced producer left open
    (Kafka aborts it when the new producer initialises), and whether the survivor's group then resumes the fenced
    member's partitions depended on that gap (it did in 2 of 4 runs): the broker's behaviour, not Quasar's."""
    monkeypatch.setattr(transactions, "probe_transactions", lambda *args, **kwargs: None)
    rt = Runtime(settings.model_copy(update={"processing_guarantee": "exactly_once", "worker_commit_interval_ms": 0}))
    await rt.reader.ready(20)
    try:
        await rt.activate("orders")
        first = await rt.worker()
        second = await rt.worker()  # init_transactions with the same id: the first producer is fenced
        ids = [f"fence-{i}" for i in range(40)]  # keys spread over both partitions: each worker gets records
        for rid in ids:
            rt.send("orders", {"data": {}, "metadata": {"rid": rid}}, key=rid)
        failure = await asyncio.wait_for(first.wait_failed(), 60)
        assert isinstance(failure, transactions.ProducerFenced), repr(failure)
        assert "same instance id" in str(failure) and rt.settings.topic_prefix + "worker.pytest" in str(failure)
        await first.abort()  # what the process exit does: the consumer leaves the group
        rt.workers.remove(first)
        assert second.failure is None
    finally:
        await rt.close()
