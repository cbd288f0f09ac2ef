"""The exactly-once transactional loop (app/worker/transactions.py) driven without a broker.

A fake transactional producer and consumer record every call in one sequence (begin, produce, send_offsets,
commit, abort, seek), so each test states the exact order the loop must follow: a batch's outputs, replies
and dead letters are produced between `begin` and `commit` together with its input offsets; a failed
delivery aborts and seeks back; a fenced producer stops the worker; a rebalance settles the open
transaction before the partitions go.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from app.kafka import headers as H
from app.worker.delivery import Batch
from app.worker.transactions import ProducerFenced, TransactionalLoop

Call = tuple[Any, ...]


class FakeMessage:
    def __init__(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None = None,
        value: bytes | None = None,
        headers: Any = None,
    ) -> None:
        self._t, self._p, self._o, self._k, self._v, self._h = topic, partition, offset, key, value, headers

    def topic(self) -> str:
        return self._t

    def partition(self) -> int:
        return self._p

    def offset(self) -> int:
        return self._o

    def key(self) -> bytes | None:
        return self._k

    def value(self) -> bytes | None:
        return self._v

    def headers(self) -> Any:
        return self._h

    def error(self) -> None:
        return None


class FakeProducer:
    """A transactional producer: delivery reports are served by poll(); failures are scripted."""

    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls
        self.refuse: Callable[[str, bytes | None], KafkaError | None] = lambda topic, key: None
        self.fail: Callable[[str, bytes | None], KafkaError | None] = lambda topic, key: None
        self.raises: dict[str, list[KafkaException]] = {}  # method -> exceptions to raise, one per call
        self._reports: list[tuple[Any, KafkaError | None, FakeMessage]] = []
        self.records: list[tuple[str, bytes | None, bytes | None, Any]] = []
        self.offset = 0

    def _maybe_raise(self, method: str) -> None:
        pending = self.raises.get(method)
        if pending:
            raise pending.pop(0)

    def produce(self, topic: str, value: Any = None, key: Any = None, **kwargs: Any) -> None:
        refused = self.refuse(topic, key)
        if refused is not None:
            raise KafkaException(refused)
        self.calls.append(("produce", topic, key))
        self.records.append((topic, key, value, kwargs.get("headers")))
        self.offset += 1
        msg = FakeMessage(topic, 0, self.offset, key, value)
        self._reports.append((kwargs.get("on_delivery"), self.fail(topic, key), msg))

    def poll(self, timeout: float = 0) -> int:
        reports, self._reports = self._reports, []
        for callback, err, msg in reports:
            if callback is not None:
                callback(err, msg)
        return len(reports)

    def flush(self, timeout: float = 0) -> int:
        self.poll(0)
        return 0

    def begin_transaction(self) -> None:
        self._maybe_raise("begin")
        self.calls.append(("begin",))

    def send_offsets_to_transaction(self, positions: list[TopicPartition], metadata: Any, timeout: float) -> None:
        assert metadata == "group-metadata"
        self._maybe_raise("send_offsets")
        self.calls.append(("send_offsets", sorted((tp.topic, tp.partition, tp.offset) for tp in positions)))

    def commit_transaction(self, timeout: float) -> None:
        self._maybe_raise("commit")
        self.calls.append(("commit",))

    def abort_transaction(self, timeout: float) -> None:
        self._maybe_raise("abort")
        self.calls.append(("abort",))


class FakeConsumer:
    def __init__(self, calls: list[Call]) -> None:
        self.calls = calls

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def seek(self, tp: TopicPartition) -> None:
        self.calls.append(("seek", tp.topic, tp.partition, tp.offset))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _loop(interval: float = 0.0) -> tuple[TransactionalLoop, FakeProducer, list[Call], Clock]:
    calls: list[Call] = []
    producer = FakeProducer(calls)
    consumer = FakeConsumer(calls)
    clock = Clock()
    loop = TransactionalLoop(
        producer,
        lambda: consumer,
        "dlq",
        transactional_id="quasar.worker.w1",
        commit_interval=interval,
        backoff=0.0,
        clock=clock,
    )
    return loop, producer, calls, clock


async def _process(msgs: list[Any], batch: Batch) -> None:
    """What the worker's `_process` does, reduced: each record -> an output and a reply; a record keyed
    `poison` -> a dead letter instead (the pipeline's verdict); its offset noted for the commit."""
    for msg in msgs:
        batch.offsets[(msg.topic(), msg.partition())] = msg.offset()
        key = msg.key()
        if key == b"poison":
            batch.acks.send(("dlq", msg.value(), key, [(H.DLQ_ERROR_CODE, b"VALIDATION")], -1))
            continue
        batch.acks.send(("out", msg.value(), key, [(H.REQUEST_ID, key)], -1))
        batch.acks.send(("replies", b"{}", key, None, -1))


def _msgs(topic: str, partition: int, *offsets: int, keys: tuple[bytes, ...] = ()) -> list[Any]:
    return [
        FakeMessage(topic, partition, o, keys[i] if i < len(keys) else f"k{o}".encode(), b"v%d" % o)
        for i, o in enumerate(offsets)
    ]


async def test_outputs_replies_dead_letters_and_offsets_commit_in_one_transaction() -> None:
    loop, _, calls, _ = _loop()
    await loop.run(_msgs("in", 0, 10, 11, keys=(b"a", b"poison")), _process)
    assert calls == [
        ("begin",),
        ("produce", "out", b"a"),
        ("produce", "replies", b"a"),
        ("produce", "dlq", b"poison"),
        ("send_offsets", [("in", 0, 12)]),
        ("commit",),
    ]
    assert loop.committed == {("in", 0): 12} and not loop.open


async def test_batches_share_a_transaction_until_the_commit_interval() -> None:
    loop, _, calls, clock = _loop(interval=1.0)
    await loop.run(_msgs("in", 0, 1), _process)
    clock.now += 0.5
    await loop.run(_msgs("in", 1, 7) + _msgs("in", 0, 2), _process)
    clock.now += 0.4
    await loop.tick()
    assert ("commit",) not in calls and loop.open  # 0.9 s: not due
    clock.now += 0.1
    await loop.tick()
    assert [c[0] for c in calls].count("begin") == 1
    assert calls[-2:] == [("send_offsets", [("in", 0, 3), ("in", 1, 8)]), ("commit",)]
    await loop.tick()  # nothing open: nothing to do
    assert calls[-1] == ("commit",)


async def test_a_failed_delivery_aborts_seeks_back_and_the_rerun_dead_letters_that_record() -> None:
    loop, producer, calls, _ = _loop()
    too_large = KafkaError(KafkaError.MSG_SIZE_TOO_LARGE, "record too large for the topic")
    producer.fail = lambda topic, key: too_large if (topic, key) == ("out", b"big") else None
    batch = _msgs("in", 0, 5, 6, 7, keys=(b"a", b"big", b"c"))
    await loop.run(batch, _process)
    assert calls[-2:] == [("abort",), ("seek", "in", 0, 5)]
    assert ("commit",) not in calls and loop.committed == {} and not loop.open
    calls.clear()
    await loop.run(batch, _process)  # the consumer re-reads from the seek
    produced = [c for c in calls if c[0] == "produce"]
    assert ("produce", "out", b"big") not in produced  # refused before the broker fails it again
    assert produced[-1] == ("produce", "dlq", b"big")  # dead-lettered inside the transaction
    assert calls[-2:] == [("send_offsets", [("in", 0, 8)]), ("commit",)]
    dead = producer.records[-1]
    hm = H.header_map(dead[3])
    assert hm[H.DLQ_ERROR_CODE] == "KAFKA_DELIVERY_FAILED" and hm[H.DLQ_ORIGINAL_TOPIC] == "out"
    assert hm[H.REQUEST_ID] == "big" and dead[2] == b"v6"
    assert not loop.poisoned  # forgotten once committed


async def test_a_transient_delivery_failure_reruns_the_records_unchanged() -> None:
    loop, producer, calls, _ = _loop()
    timed_out = KafkaError(KafkaError._MSG_TIMED_OUT, "broker away", retriable=True)
    failing = [True]
    producer.fail = lambda topic, key: timed_out if failing[0] and topic == "out" else None
    batch = _msgs("in", 2, 40)
    await loop.run(batch, _process)
    await loop.run(batch, _process)  # still away: aborted again (backs off)
    assert [c for c in calls if c[0] in ("abort", "seek")] == [("abort",), ("seek", "in", 2, 40)] * 2
    failing[0] = False
    calls.clear()
    await loop.run(batch, _process)
    assert calls == [
        ("begin",),
        ("produce", "out", b"k40"),
        ("produce", "replies", b"k40"),
        ("send_offsets", [("in", 2, 41)]),
        ("commit",),
    ]
    assert loop.aborts_in_row == 0


async def test_a_record_refused_locally_is_dead_lettered_without_aborting() -> None:
    loop, producer, calls, _ = _loop()
    unknown = KafkaError(KafkaError._UNKNOWN_PARTITION, "no such partition")
    producer.refuse = lambda topic, key: unknown if (topic, key) == ("replies", b"a") else None
    await loop.run(_msgs("in", 0, 3, keys=(b"a",)), _process)
    assert calls == [
        ("begin",),
        ("produce", "out", b"a"),
        ("produce", "dlq", b"a"),
        ("send_offsets", [("in", 0, 4)]),
        ("commit",),
    ]


async def test_a_dead_letter_that_cannot_be_produced_is_skipped_and_counted() -> None:
    loop, producer, calls, _ = _loop()
    producer.refuse = lambda topic, key: KafkaError(KafkaError._UNKNOWN_TOPIC, "gone") if topic == "dlq" else None
    await loop.run(_msgs("in", 0, 3, keys=(b"poison",)), _process)
    assert loop.undeliverable == 1
    assert calls == [("begin",), ("send_offsets", [("in", 0, 4)]), ("commit",)]


@pytest.mark.parametrize("method", ["commit", "send_offsets", "begin"])
async def test_a_fenced_producer_stops_the_worker(method: str) -> None:
    loop, producer, calls, _ = _loop()
    fenced = KafkaError(KafkaError._FENCED, "producer fenced by a newer instance", fatal=True)
    producer.raises[method] = [KafkaException(fenced)]
    with pytest.raises(ProducerFenced, match=r"quasar\.worker\.w1.*same instance id"):
        await loop.run(_msgs("in", 0, 1), _process)
    assert ("abort",) not in calls and ("commit",) not in calls  # a fenced producer can do nothing more
    assert loop.committed == {}


async def test_a_fatal_error_raised_by_produce_stops_the_worker_without_dead_letters() -> None:
    # librdkafka raises a fenced producer's fatal error from produce() and poll() too, not only from the
    # transaction calls: it must not look like a record refused locally (which would be dead-lettered).
    loop, producer, calls, _ = _loop()
    fenced = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    producer.refuse = lambda topic, key: fenced
    with pytest.raises(ProducerFenced):
        await loop.run(_msgs("in", 0, 1), _process)
    assert calls == [("begin",)] and loop.undeliverable == 0


async def test_a_retriable_commit_error_is_retried_without_adding_the_offsets_twice() -> None:
    loop, producer, calls, _ = _loop()
    producer.raises["commit"] = [KafkaException(KafkaError(KafkaError._TIMED_OUT, "slow", retriable=True))]
    await loop.run(_msgs("in", 0, 1), _process)
    assert [c[0] for c in calls] == ["begin", "produce", "produce", "send_offsets", "commit"]
    assert loop.committed == {("in", 0): 2}


async def test_offsets_refused_by_the_group_abort_and_seek_back() -> None:
    # A rebalance between consume and commit: the group's generation moved on, the transaction must go.
    loop, producer, calls, _ = _loop()
    stale = KafkaError(KafkaError.ILLEGAL_GENERATION, "generation changed", txn_requires_abort=True)
    producer.raises["send_offsets"] = [KafkaException(stale)]
    await loop.run(_msgs("in", 0, 4, 5) + _msgs("in", 1, 9), _process)
    assert calls[-3:] == [("abort",), ("seek", "in", 0, 4), ("seek", "in", 1, 9)]
    assert loop.committed == {} and not loop.open


async def test_a_rebalance_mid_transaction_commits_before_the_partitions_go() -> None:
    loop, _, calls, _ = _loop(interval=3600.0)
    await loop.run(_msgs("in", 0, 4), _process)
    assert loop.open and ("commit",) not in calls
    loop.on_revoke()  # called by the consumer's revoke callback, partitions still ours
    assert calls[-2:] == [("send_offsets", [("in", 0, 5)]), ("commit",)]
    assert loop.committed == {("in", 0): 5} and not loop.open
    await loop.run(_msgs("in", 1, 0), _process)  # the next batch opens a new transaction
    assert calls[-3] == ("begin",) and loop.open


async def test_a_rebalance_whose_commit_fails_aborts_and_seeks_back() -> None:
    loop, producer, calls, _ = _loop(interval=3600.0)
    await loop.run(_msgs("in", 0, 4), _process)
    producer.raises["commit"] = [KafkaException(KafkaError(KafkaError._STATE, "abortable", txn_requires_abort=True))]
    loop.on_revoke()
    assert calls[-2:] == [("abort",), ("seek", "in", 0, 4)]
    assert loop.committed == {}


async def test_stop_commits_the_open_transaction_and_an_abort_leaves_nothing_committed() -> None:
    loop, _, calls, _ = _loop(interval=3600.0)
    await loop.run(_msgs("in", 0, 4), _process)
    await loop.close(commit=True)
    assert calls[-1] == ("commit",) and loop.committed == {("in", 0): 5}
    await loop.run(_msgs("in", 0, 5), _process)
    await loop.close(commit=False)
    assert calls[-2:] == [("abort",), ("seek", "in", 0, 5)] and loop.committed == {("in", 0): 5}
