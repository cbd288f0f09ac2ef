"""The delivery tracker's commit cadence (QUASAR_WORKER_COMMIT_INTERVAL_MS), without a broker: settled
batches are committed in order, together at most once per interval, and `drain()` commits at once."""

from __future__ import annotations

import asyncio
from typing import Any

from confluent_kafka import TopicPartition

from app.worker.delivery import DeliveryTracker


class _Consumer:
    """Records every commit call (offsets as plain tuples)."""

    def __init__(self) -> None:
        self.commits: list[list[tuple[str, int, int]]] = []

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> None:
        assert asynchronous
        self.commits.append(sorted((tp.topic, tp.partition, tp.offset) for tp in offsets))


def _tracker(interval: float) -> tuple[DeliveryTracker, _Consumer]:
    consumer = _Consumer()
    producer: Any = object()  # no record is produced: the acks never touch the client
    return DeliveryTracker(lambda: producer, lambda: consumer, "dlq", commit_interval=interval), consumer


def _seal(tracker: DeliveryTracker, offsets: dict[tuple[str, int], int]) -> None:
    batch = tracker.batch()
    batch.offsets.update(offsets)
    tracker.seal(batch)


async def _settle_queue(tracker: DeliveryTracker) -> None:
    # The commit loop takes every sealed batch off its queue (settling an empty batch never waits).
    for _ in range(100):
        if tracker._queue.empty():
            break
        await asyncio.sleep(0)
    await asyncio.sleep(0)


async def test_interval_zero_commits_every_batch_in_order() -> None:
    tracker, consumer = _tracker(0.0)
    loop = asyncio.create_task(tracker.commit_loop())
    try:
        _seal(tracker, {("a", 0): 4})
        _seal(tracker, {("a", 0): 9, ("a", 1): 2})
        _seal(tracker, {("a", 1): 7})
        await asyncio.wait_for(tracker.drain(), 5)
    finally:
        loop.cancel()
    assert consumer.commits == [[("a", 0, 5)], [("a", 0, 10), ("a", 1, 3)], [("a", 1, 8)]]


async def test_batches_within_the_interval_share_one_commit_and_drain_does_not_wait_for_it() -> None:
    tracker, consumer = _tracker(3600.0)  # never due within the test: only drain() commits
    loop = asyncio.create_task(tracker.commit_loop())
    try:
        _seal(tracker, {("a", 0): 4})
        _seal(tracker, {("a", 0): 9, ("a", 1): 2})
        _seal(tracker, {("a", 1): 7})
        await _settle_queue(tracker)
        assert consumer.commits == [] and len(tracker.pending) == 3  # settled, waiting for the interval
        await asyncio.wait_for(tracker.drain(), 5)
        assert consumer.commits == [[("a", 0, 10), ("a", 1, 8)]]  # the latest offset per partition
        assert not tracker.pending
    finally:
        loop.cancel()


async def test_revoked_partitions_are_left_out_of_a_coalesced_commit() -> None:
    tracker, consumer = _tracker(3600.0)
    loop = asyncio.create_task(tracker.commit_loop())
    try:
        _seal(tracker, {("a", 0): 4, ("a", 1): 1})
        _seal(tracker, {("a", 0): 9})
        await _settle_queue(tracker)
        tracker.forget({("a", 0)})  # the partition went to another member meanwhile
        await asyncio.wait_for(tracker.drain(), 5)
    finally:
        loop.cancel()
    assert consumer.commits == [[("a", 1, 2)]]


def _seal_records(tracker: DeliveryTracker, offsets: dict[tuple[str, int], int], records: int) -> None:
    batch = tracker.batch()
    batch.offsets.update(offsets)
    batch.records = records
    tracker.seal(batch)


async def test_uncommitted_records_are_counted_until_their_batches_commit() -> None:
    tracker, consumer = _tracker(3600.0)
    loop = asyncio.create_task(tracker.commit_loop())
    try:
        _seal_records(tracker, {("a", 0): 4}, 5)
        _seal_records(tracker, {("a", 0): 11}, 7)
        await _settle_queue(tracker)
        assert tracker.uncommitted == 12  # settled but not committed: a crash now runs them again
        await tracker.wait_progress(0.01)  # no commit within the interval: returns when its wait ends
        assert tracker.uncommitted == 12 and consumer.commits == []
        waiter = asyncio.create_task(tracker.wait_progress(30))
        await asyncio.sleep(0)
        await asyncio.wait_for(tracker.drain(), 5)
        await asyncio.wait_for(waiter, 5)  # woken by the commit, not by its 30 s bound
        assert tracker.uncommitted == 0 and consumer.commits == [[("a", 0, 12)]]
    finally:
        loop.cancel()
