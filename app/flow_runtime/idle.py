"""Fetching less while idle, for brokers that answer a waiting fetch only when it expires (Tansu)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from app.settings import Settings

__all__ = ["IdleFetch"]


class IdleFetch:
    """Fetching less while nothing happens, for brokers that answer a waiting fetch only when its wait
    expires (Tansu): there an idle consumer costs the broker one fetch per `fetch_wait_max_ms`.

    After `IDLE_AFTER_S` without a record or an event of its own, a consumer pauses its partitions and
    fetches only for a `window` once per `interval`; a record, or an event its owner produces (`active`),
    resumes fetching at once. A record from elsewhere (for the flow runner: a start, a signal, a worker's
    result; for the gateway's instance view: any state change) then waits up to `interval`. Off
    (`interval` 0) by default: Kafka answers a waiting fetch as soon as data arrives.
    """

    IDLE_AFTER_S = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> IdleFetch:
        """`flows_idle_fetch_interval_ms`, with a window of at least 300 ms: Tansu answers a fetch of many
        partitions in more than one fetch wait, and an answer that comes after the pause is dropped."""
        return cls(settings.flows_idle_fetch_interval_ms / 1000, max(0.3, 10 * settings.fetch_wait_max_ms / 1000))

    def __init__(self, interval: float, window: float) -> None:
        self.interval = interval
        self.window = window
        self.paused = False
        self._last = time.monotonic()
        self._woken = False
        self._next_probe = 0.0
        # Next offset per partition, from records read and from known starts: a resume needs one to seek to.
        self._next: dict[tuple[str, int], int] = {}

    def seen(self, msgs: Iterable[Message]) -> None:
        for msg in msgs:
            self._next[(msg.topic() or "", msg.partition() or 0)] = (msg.offset() or 0) + 1

    def known(self, starts: Iterable[TopicPartition]) -> None:
        """Where reading starts on newly assigned partitions (an explicit offset or the committed one)."""
        for tp in starts:
            self._next[(tp.topic, tp.partition)] = max(tp.offset, 0)  # nothing committed: from the start

    def active(self) -> None:
        self._last = time.monotonic()
        self._woken = True

    def before_poll(self, consumer: Consumer, now: float) -> float | None:
        """Pause or resume the partitions; returns the longest the poll may wait (None: no limit)."""
        if self.interval <= 0:
            return None
        woken, self._woken = self._woken, False
        if self.paused:
            if not woken and now < self._next_probe:
                return self._next_probe - now
            self._set(consumer, paused=False)
            if woken:
                return None
            self._last = now - self.IDLE_AFTER_S + self.window  # a probe: one window, then pause again
            return self.window
        if now - self._last > self.IDLE_AFTER_S and self._next:
            self._set(consumer, paused=True)
            self._next_probe = now + self.interval
            return self.interval
        remaining = self._last + self.IDLE_AFTER_S - now  # wake up to pause when the runner turns idle
        # Idle with no position known (nothing read or assigned yet): nothing to pause by, no limit. Never
        # negative: confluent-kafka reads a negative poll timeout as "wait forever".
        return remaining if remaining > 0 else None

    def _set(self, consumer: Consumer, *, paused: bool) -> None:
        with contextlib.suppress(KafkaException):  # mid-rebalance: the next turn tries again
            assignment = consumer.assignment()
            if paused:
                consumer.pause(assignment)
            else:
                consumer.resume(assignment)
                # librdkafka notices a resume only at its fetcher's next 1 s tick; a seek of one partition
                # to where it stands (nothing skipped, nothing read twice) wakes the fetcher for all of
                # them (one broker: this is for Tansu). Without a known position it never pauses.
                for tp in consumer.position(assignment):
                    offset = tp.offset if tp.offset >= 0 else self._next.get((tp.topic, tp.partition))
                    if offset is not None:
                        consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
                        break
            self.paused = paused
