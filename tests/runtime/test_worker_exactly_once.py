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

import pytest
from confluent_kafka import Consumer, Producer

from app.kafka.admin import create_admin
from app.kafka.config import producer_config, reader_config
from app.kafka.consumer import read_to_end
from app.kafka.names import TopicNames
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings
from app.worker.runner import ChannelWorker
from app.worker.transactions import TransactionsUnsupported, probe_transactions
from bench.faults import quasar_env

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
