"""Per-channel consumption control in the worker: pause/resume, start position, seek (replay) requests.

The requests are runtime records on the config topic (app/config_store/channel_ops.py): every worker
folds them, so every worker obeys, and they survive restarts. This class applies them to the worker's
one group consumer:

- pause: the channel's assigned partitions are paused (`Consumer.pause`), also the ones a rebalance
  assigns later; records of it already fetched into a batch are not run: the partition is sought back to
  the first of them, so resume continues exactly there (no loss, no duplicate). The partitions stay
  assigned, so the lag metric (committed offsets vs high watermarks) shows the backlog growing.
- start position: a partition the group has no committed offset for starts where the channel's
  `start_from` says: `earliest`, `latest` (the records produced since the channel version was
  activated) or a timestamp. Resolved with `offsets_for_times`, then checked record by record: Tansu
  answers a time after its last record with offset 0, so records older than the start time are skipped
  (and committed past) until the first one at or after it.
- seek: a request moves the group's position on the channel's partitions to a time or an offset; the
  owner of each partition seeks, commits the new position synchronously, then records the request as
  applied on that partition (`channel-seek-applied/...`), so a rebalance or restart never applies it
  twice. A crash between the commit and that record applies it again: at-least-once, like everything else.

Broker calls (committed offsets, offsets_for_times, the seek commit) happen in the rebalance callback or
between two polls of the consume loop, never while a batch is being processed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from app.config_store.channel_ops import (
    PAUSE_PREFIX,
    SEEK_PREFIX,
    SeekRequest,
    is_paused,
    mark_seek_applied,
    seek_applied,
    seek_request,
)
from app.worker.pipeline import ChannelRoute

__all__ = ["ConsumptionControl", "describe_partitions"]

log = logging.getLogger("quasar.worker")

BROKER_TIMEOUT_S = 10.0


class ConsumptionControl:
    """What the consume loop asks per record (`gated`, `paused_topics`, `floors`) and what it runs between
    polls (`apply_pending`); `on_assign` / `on_revoke` are the consumer's rebalance callbacks."""

    def __init__(
        self,
        log_: Any,
        instance: str,
        consumer: Callable[[], Consumer | None],
        forget: Callable[[set[tuple[str, int]]], None],
        *,
        cooperative: bool = True,
        throttled: Callable[[], Mapping[tuple[str, int], int]] = dict,
    ) -> None:
        self.log = log_
        self.instance = instance
        self._consumer = consumer
        self._forget = forget  # the delivery tracker's: pending commits of a sought partition are dropped
        self._throttled = throttled  # partitions the rate limit holds: its timer resumes them, not us
        self.cooperative = cooperative
        self.paused_topics: frozenset[str] = frozenset()
        self.held: dict[tuple[str, int], int] = {}  # paused partition -> the offset it resumes at
        self.floors: dict[tuple[str, int], int] = {}  # skip records older than this (ms) until a newer one
        self.gated = False  # anything above to check per record
        self.holds = 0  # records of paused channels held (tests)
        self._routes: Mapping[str, ChannelRoute] = {}
        self._seeks: set[str] = set()  # channels whose seek request changed, applied between two polls
        self._confirm: list[tuple[SeekRequest, int, int]] = []  # (request, partition, offset) to commit
        self._applied: dict[tuple[str, int], str] = {}  # (channel, partition) -> request id, this process
        self._unlisten: list[Callable[[], None]] = []

    # -- config ------------------------------------------------------------------------------------
    def start(self) -> None:
        add = getattr(self.log, "add_runtime_listener", None)
        if add is not None:
            self._unlisten = [add(PAUSE_PREFIX, self._on_pause), add(SEEK_PREFIX, self._on_seek)]

    def stop(self) -> None:
        for unlisten in self._unlisten:
            unlisten()
        self._unlisten = []

    def set_routes(self, routes: Mapping[str, ChannelRoute]) -> None:
        """The worker's routes changed (topic -> channel): re-apply pauses, look for seek requests."""
        self._routes = routes
        self._seeks.update(r.name for r in routes.values() if seek_request(self.log, r.name) is not None)
        self._refresh_pauses()

    @property
    def pending(self) -> bool:
        """Work for `apply_pending` (seeks to apply or to confirm)."""
        return bool(self._seeks or self._confirm)

    def _on_pause(self, key: str, value: bytes | None) -> None:
        self._refresh_pauses()

    def _on_seek(self, key: str, value: bytes | None) -> None:
        if value is not None:
            self._seeks.add(key.rpartition("/")[2])

    def _refresh_pauses(self) -> None:
        paused = frozenset(t for t, r in self._routes.items() if is_paused(self.log, r.name))
        before, self.paused_topics = self.paused_topics, paused
        self._regate()
        consumer = self._consumer()
        if consumer is None or paused == before:
            return
        assigned = _assignment(consumer)
        stop = [TopicPartition(t, p) for t, p in assigned if t in paused and t not in before]
        throttled = self._throttled()
        go = [TopicPartition(t, p) for t, p in assigned if t in before and t not in paused and (t, p) not in throttled]
        self.held = {tp: o for tp, o in self.held.items() if tp[0] in paused}
        try:
            if stop:
                consumer.pause(stop)
            if go:
                consumer.resume(go)
        except Exception as exc:  # closed consumer, or a partition revoked meanwhile
            log.warning("cannot pause/resume %s: %s", sorted({tp.topic for tp in stop + go}), exc)
        for topic in sorted({tp.topic for tp in stop}):
            log.info("channel %s paused (%s)", self._routes[topic].name, topic)
        for topic in sorted({tp.topic for tp in go}):
            log.info("channel %s resumed (%s)", self._routes[topic].name, topic)

    def _regate(self) -> None:
        self.gated = bool(self.paused_topics or self.floors)

    # -- per record (consume loop) -------------------------------------------------------------------
    def hold(self, consumer: Consumer, topic: str, partition: int, offset: int) -> None:
        """A fetched record of a paused channel: pause its partition and make `offset` (or an earlier held
        one) its next record. Called once per partition and batch; again if something resumed it."""
        self.holds += 1
        start = min(offset, self.held.get((topic, partition), offset))
        self.held[(topic, partition)] = start
        target = TopicPartition(topic, partition, start)
        try:
            consumer.pause([target])
            consumer.seek(target)
        except Exception as exc:
            # Revoked meanwhile: the new owner starts from the last commit, at or before `offset`.
            log.warning("cannot hold paused %s[%d] at %d: %s", topic, partition, start, exc)

    def below_floor(self, topic: str, partition: int, timestamp_ms: int) -> bool:
        """Whether a record comes before its partition's start time (skip it); the first one at or after
        the start time lifts the floor."""
        floor = self.floors.get((topic, partition))
        if floor is None:
            return False
        if timestamp_ms >= floor:
            del self.floors[(topic, partition)]
            self._regate()
            return False
        return True

    # -- rebalance callbacks (the polling thread) -----------------------------------------------------
    def on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """Start positions for partitions without a committed offset, seeks not applied yet, pauses."""
        try:
            self._position(consumer, partitions)
        except Exception as exc:
            # Never lose the assignment: without positions the group's committed offsets apply.
            log.warning("cannot resolve start positions (committed offsets apply): %s", exc)
        if self.cooperative:
            consumer.incremental_assign(partitions)
        else:
            consumer.assign(partitions)
        paused = [TopicPartition(tp.topic, tp.partition) for tp in partitions if tp.topic in self.paused_topics]
        if paused:
            consumer.pause(paused)
        log.info("partitions assigned (pid %d): %s", os.getpid(), describe_partitions(partitions))

    def on_revoke(self, partitions: list[TopicPartition]) -> None:
        for tp in {(tp.topic, tp.partition) for tp in partitions}:
            self.held.pop(tp, None)
            self.floors.pop(tp, None)
        self._regate()

    def _position(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        routes = self._routes
        ours = [tp for tp in partitions if tp.topic in routes]
        if not ours:
            return
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in consumer.committed([TopicPartition(tp.topic, tp.partition) for tp in ours], BROKER_TIMEOUT_S)
        }
        by_time: list[tuple[TopicPartition, int]] = []
        sought: list[tuple[SeekRequest, TopicPartition]] = []
        for tp in ours:
            route = routes[tp.topic]
            request = self._unapplied(route, tp.topic, tp.partition)
            if request is not None:
                if request.from_offset is not None:
                    tp.offset = _within(consumer, tp.topic, tp.partition, request.from_offset)
                else:
                    assert request.from_ms is not None
                    by_time.append((tp, request.from_ms))
                sought.append((request, tp))
                continue
            if committed.get((tp.topic, tp.partition), -1) >= 0:
                continue
            start = route.start_from
            if start == "earliest":
                tp.offset = OFFSET_BEGINNING
            else:
                by_time.append((tp, route.active_since_ms if start == "latest" else int(start)))
        if by_time:
            found = _offsets_for_times(consumer, [(tp.topic, tp.partition, ms) for tp, ms in by_time])
            for tp, ms in by_time:
                tp.offset = found[(tp.topic, tp.partition)]
                self.floors[(tp.topic, tp.partition)] = ms
            self._regate()
        # Seeks placed by the assignment: committed and recorded by `apply_pending` after this poll.
        self._confirm.extend((request, tp.partition, tp.offset) for request, tp in sought)
        for tp in ours:
            log.info("%s[%d] starts at %s", tp.topic, tp.partition, tp.offset)

    def _unapplied(self, route: ChannelRoute, topic: str, partition: int) -> SeekRequest | None:
        request = seek_request(self.log, route.name)
        if request is None or not request.covers(topic, partition):
            return None
        if self._applied.get((route.name, partition)) == request.id:
            return None
        done = seek_applied(self.log, route.name).get(partition)
        if done is not None and done.get("request") == request.id:
            return None
        return request

    # -- between two polls (the event loop) -------------------------------------------------------------
    async def apply_pending(self, consumer: Consumer) -> None:
        """Apply new seek requests on the partitions this worker owns; commit and record every seek."""
        names, self._seeks = self._seeks, set()
        by_name = {r.name: (topic, r) for topic, r in self._routes.items()}
        moves: list[tuple[SeekRequest, TopicPartition, int | None]] = []
        # Partitions sought by their assignment are only waiting for their commit (below).
        placed = {(r.topic, p) for r, p, _o in self._confirm}
        assigned = _assignment(consumer) - placed
        for name in sorted(names):
            if name not in by_name:
                continue
            topic, route = by_name[name]
            for t, p in sorted(assigned):
                if t != topic:
                    continue
                request = self._unapplied(route, t, p)
                if request is not None:
                    moves.append((request, TopicPartition(t, p), request.from_ms))
        if moves:
            timed = [(tp.topic, tp.partition, ms) for _, tp, ms in moves if ms is not None]
            found = await asyncio.to_thread(_offsets_for_times, consumer, timed) if timed else {}
            for request, tp, ms in moves:
                if ms is not None:
                    offset = found[(tp.topic, tp.partition)]
                else:
                    assert request.from_offset is not None
                    offset = await asyncio.to_thread(_within, consumer, tp.topic, tp.partition, request.from_offset)
                key = (tp.topic, tp.partition)
                self._forget({key})  # batches before the seek must not commit over it
                self.held.pop(key, None)
                if ms is not None:
                    self.floors[key] = ms
                else:
                    self.floors.pop(key, None)
                try:
                    consumer.seek(TopicPartition(tp.topic, tp.partition, offset))
                except Exception as exc:
                    # Not fetching yet (just assigned) or revoked meanwhile: asked again after the next poll.
                    log.warning("cannot seek %s[%d] to %s yet: %s", tp.topic, tp.partition, offset, exc)
                    self._seeks.add(request.channel)
                    continue
                self._confirm.append((request, tp.partition, offset))
            self._regate()
        confirms, self._confirm = self._confirm, []
        ready = [(r, p, o) for r, p, o in confirms if o >= 0]
        if not ready:
            return
        offsets = [TopicPartition(r.topic, p, o) for r, p, o in ready]
        try:
            # Synchronous: the request is recorded as applied only once its position is committed.
            await asyncio.to_thread(consumer.commit, offsets=offsets, asynchronous=False)
        except Exception as exc:
            log.warning("cannot commit sought positions (the seek is applied again later): %s", exc)
            self._seeks.update(r.channel for r, _, _ in ready)
            return
        for request, partition, offset in ready:
            self._applied[(request.channel, partition)] = request.id
            log.info("seek %s applied: %s[%d] at %d", request.id, request.topic, partition, offset)
            try:
                await mark_seek_applied(self.log, request, partition, offset, self.instance)
            except Exception as exc:  # visibility only: this process remembers it applied the request
                log.warning("cannot record seek %s as applied: %s", request.id, exc)


def _assignment(consumer: Consumer) -> set[tuple[str, int]]:
    try:
        return {(tp.topic, tp.partition) for tp in consumer.assignment()}
    except Exception:
        return set()


def _within(consumer: Consumer, topic: str, partition: int, offset: int) -> int:
    """`offset` kept within what the partition holds: an offset out of range would make the consumer fall
    back to `auto.offset.reset` (earliest: the whole partition again). Tansu reports the base offset of its
    last batch + 1 as the end, so an offset inside that batch may start a few records early (at-least-once)."""
    low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), BROKER_TIMEOUT_S)
    return max(low, min(offset, high))


def _offsets_for_times(consumer: Consumer, wanted: list[tuple[str, int, int]]) -> dict[tuple[str, int], int]:
    """(topic, partition) -> the offset of the first record at or after the time; the end of the partition
    when there is none (real Kafka answers -1 there; Tansu answers 0, and the record floor skips the older
    records instead)."""
    asked = [TopicPartition(t, p, ms) for t, p, ms in wanted]
    out: dict[tuple[str, int], int] = {}
    for tp in consumer.offsets_for_times(asked, BROKER_TIMEOUT_S):
        if tp.error is not None:
            raise RuntimeError(f"offsets_for_times {tp.topic}[{tp.partition}]: {tp.error}")
        offset = tp.offset
        if offset < 0:
            _, offset = consumer.get_watermark_offsets(TopicPartition(tp.topic, tp.partition), BROKER_TIMEOUT_S)
        out[(tp.topic, tp.partition)] = offset
    return out


def describe_partitions(partitions: list[TopicPartition]) -> str:
    """`topic[0,1] other[3]`: an assignment in one log line (the pid beside it tells processes apart)."""
    by_topic: dict[str, list[int]] = {}
    for tp in partitions:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return " ".join(f"{t}[{','.join(map(str, sorted(ps)))}]" for t, ps in sorted(by_topic.items())) or "none"
