"""`TaskBridge`: external tasks for workers that cannot speak Kafka, handed out over HTTP long-polls.

Per handler that HTTP workers poll, the bridge is one more member of a consumer group
(`<prefix>bridge.<handler>`, shared by every gateway) on `<prefix>tasks.<handler>`. A poll takes the
oldest fetched task or waits for one; the task is then *leased* to that poller:

- its offset is committed once it is handed out (fetched but not handed out when the gateway stops
  or the partition moves: the group delivers it again);
- a lease that ends without a completion (the worker died) puts the task back in the queue for the
  next poll, while the task's `deadline` has not passed; after the deadline the flow's own timer has
  retried the step with a new attempt (a new task), so the old one is dropped. A gateway that dies
  holding leases loses them: the flow's timeout and retry cover that, as for a Kafka worker;
- a completion or failure is a result record on `<prefix>flows.results`, the same envelope Kafka
  workers write, applied by the flow runner once per `(step, attempt)`.

A handler's consumer exists only while it is polled: after `idle_seconds` without a poll it leaves
the group (no fetches for handlers nobody polls). Tasks fetched ahead are bounded (`BUFFER`); when
the buffer is full the partitions are paused, not left unpolled (the group would evict the member).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from app.kafka.config import consumer_config
from app.kafka.names import TopicNames
from app.settings import Settings

__all__ = ["BridgeTask", "TaskBridge"]

log = logging.getLogger(__name__)

BUFFER = 100  # tasks fetched ahead per handler and gateway
_COMPLETED_KEPT = 10_000  # task ids completed through this gateway, for a clear 409 on a repeat


@dataclass(slots=True)
class BridgeTask:
    envelope: dict[str, Any]
    handler: str
    partition: int
    offset: int
    lease_until: float = 0.0
    committed: bool = False
    leases: int = 0

    @property
    def task_id(self) -> str:
        return str(self.envelope["task_id"])

    @property
    def deadline(self) -> float | None:
        value = self.envelope.get("deadline")
        return float(value) if isinstance(value, int | float) else None


@dataclass
class _Feed:
    """The tasks of one handler on this gateway."""

    handler: str
    consumer: Consumer
    ready: deque[BridgeTask] = field(default_factory=deque)
    waiters: deque[asyncio.Future[BridgeTask]] = field(default_factory=deque)
    last_poll: float = field(default_factory=time.monotonic)
    paused: bool = False
    # Per partition, the offsets fetched and not yet committable, in order, each with "done" (handed
    # out or skipped): the commit moves over a done prefix only, never past a task still queued.
    progress: dict[int, deque[list[int]]] = field(default_factory=dict)
    loop_task: asyncio.Task[None] | None = None
    executor: ThreadPoolExecutor = field(default_factory=lambda: ThreadPoolExecutor(1, thread_name_prefix="bridge"))


class TaskBridge:
    def __init__(self, settings: Settings, *, idle_seconds: float = 60.0) -> None:
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        self.idle_seconds = idle_seconds
        self.fetch_wait = 1.0  # seconds a feed's poll blocks when nothing arrives (bounds stop latency)
        self._feeds: dict[str, _Feed] = {}
        self.leases: dict[str, BridgeTask] = {}  # task id -> task handed out and not completed
        self.completed: OrderedDict[str, str] = OrderedDict()  # task id -> "completed" | "failed"
        self.polling = 0  # polls waiting now (the gateway bounds them)
        self._stopping = False

    # -- what the HTTP routes call ---------------------------------------------------------------

    async def take(self, handler: str, wait: float, lease: float) -> BridgeTask | None:
        """The next task of `handler`, leased for `lease` seconds; None after `wait` seconds without one."""
        feed = self._feed(handler)
        feed.last_poll = time.monotonic()
        self._requeue_expired()
        task = self._next_ready(feed)
        if task is None:
            future: asyncio.Future[BridgeTask] = asyncio.get_running_loop().create_future()
            feed.waiters.append(future)
            self.polling += 1
            try:
                task = await asyncio.wait_for(future, wait)
            except TimeoutError:
                return None
            except asyncio.CancelledError:  # the poll was cancelled: a task handed to it goes to the next one
                if future.done() and not future.cancelled():
                    self._offer(feed, future.result(), first=True)
                raise
            finally:
                self.polling -= 1
                with contextlib.suppress(ValueError):
                    feed.waiters.remove(future)
                feed.last_poll = time.monotonic()
        self._lease(feed, task, lease)
        return task

    def finish(self, task_id: str, outcome: str) -> None:
        """A completion or failure for `task_id` was produced: the lease ends, a repeat is refused."""
        self.leases.pop(task_id, None)
        self.completed[task_id] = outcome
        while len(self.completed) > _COMPLETED_KEPT:
            self.completed.popitem(last=False)

    async def close(self) -> None:
        self._stopping = True
        for feed in list(self._feeds.values()):
            if feed.loop_task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await feed.loop_task

    # -- feeds -----------------------------------------------------------------------------------

    def _feed(self, handler: str) -> _Feed:
        feed = self._feeds.get(handler)
        if feed is not None:
            return feed
        conf = consumer_config(
            self.settings,
            group_id=f"{self.settings.topic_prefix}bridge.{handler}",
            client_id=f"quasar-task-bridge-{self.settings.instance_id}",
        )
        conf["queued.max.messages.kbytes"] = 1024  # fetched ahead per consumer (librdkafka's default: 64 MB)
        feed = _Feed(handler, Consumer(conf))
        loop = asyncio.get_running_loop()

        def revoked(consumer: Consumer, partitions: list[TopicPartition]) -> None:
            gone = {tp.partition for tp in partitions}
            loop.call_soon_threadsafe(self._drop, feed, gone)

        feed.consumer.subscribe([self.names.tasks(handler)], on_revoke=revoked)
        feed.loop_task = loop.create_task(self._run(feed), name=f"task-bridge-{handler}")
        self._feeds[handler] = feed
        return feed

    async def _run(self, feed: _Feed) -> None:
        loop = asyncio.get_running_loop()
        consumer = feed.consumer
        try:
            while not self._stopping:
                idle = not feed.waiters and time.monotonic() - feed.last_poll > self.idle_seconds
                if idle:
                    break
                self._flow_control(feed)
                msgs = await loop.run_in_executor(feed.executor, _poll_batch, consumer, BUFFER, self.fetch_wait)
                for msg in msgs:
                    self._arrived(feed, msg)
                self._requeue_expired()
        except Exception:
            log.exception("task bridge: the feed of %s failed", feed.handler)
        finally:
            self._feeds.pop(feed.handler, None)
            for future in feed.waiters:
                future.cancel()
            # Tasks fetched and not handed out stay uncommitted: the group delivers them again.
            await loop.run_in_executor(feed.executor, consumer.close)
            feed.executor.shutdown(wait=False)

    def _flow_control(self, feed: _Feed) -> None:
        full = len(feed.ready) >= BUFFER
        if full == feed.paused:
            return
        with contextlib.suppress(KafkaException):
            assignment = feed.consumer.assignment()
            if full:
                feed.consumer.pause(assignment)
            else:
                feed.consumer.resume(assignment)
            feed.paused = full

    def _arrived(self, feed: _Feed, msg: Message) -> None:
        if msg.error() is not None:
            return
        try:
            envelope = orjson.loads(msg.value() or b"")
            if not isinstance(envelope, dict) or not isinstance(envelope.get("task_id"), str):
                raise ValueError("not a task envelope")
        except ValueError as exc:
            log.warning("task bridge: %s[%s]@%s skipped: %s", msg.topic(), msg.partition(), msg.offset(), exc)
            self._track(feed, msg.partition() or 0, msg.offset() or 0)
            self._done(feed, msg.partition() or 0, msg.offset() or 0)
            return
        self._track(feed, msg.partition() or 0, msg.offset() or 0)
        task = BridgeTask(envelope, feed.handler, msg.partition() or 0, msg.offset() or 0)
        if task.task_id in self.completed or task.task_id in self.leases:
            self._done(feed, task.partition, task.offset)  # a redelivery of a task this gateway handles
            return
        self._offer(feed, task)

    def _offer(self, feed: _Feed, task: BridgeTask, *, first: bool = False) -> None:
        """To the longest-waiting poll, else into the queue (`first`: ahead of the others)."""
        while feed.waiters:
            future = feed.waiters.popleft()
            if not future.done():
                future.set_result(task)
                return
        if first:
            feed.ready.appendleft(task)
        else:
            feed.ready.append(task)

    def _next_ready(self, feed: _Feed) -> BridgeTask | None:
        now = time.time()
        while feed.ready:
            task = feed.ready.popleft()
            if task.deadline is not None and now > task.deadline:
                self._done(feed, task.partition, task.offset)  # the flow has given up on this attempt
                continue
            return task
        return None

    def _lease(self, feed: _Feed, task: BridgeTask, lease: float) -> None:
        task.lease_until = time.time() + lease
        task.leases += 1
        self.leases[task.task_id] = task
        if not task.committed:
            self._done(feed, task.partition, task.offset)
            task.committed = True

    def _requeue_expired(self) -> None:
        now = time.time()
        for task_id, task in list(self.leases.items()):
            if task.lease_until > now:
                continue
            del self.leases[task_id]
            feed = self._feeds.get(task.handler)
            if feed is not None and (task.deadline is None or now < task.deadline):
                log.info("task bridge: lease of %s ended without a result: offered again", task_id)
                self._offer(feed, task, first=True)

    def _drop(self, feed: _Feed, partitions: set[int]) -> None:
        """Partitions moved to another gateway: its member delivers their unhanded tasks from the commit."""
        feed.ready = deque(t for t in feed.ready if t.committed or t.partition not in partitions)
        for partition in partitions:
            feed.progress.pop(partition, None)

    def _track(self, feed: _Feed, partition: int, offset: int) -> None:
        feed.progress.setdefault(partition, deque()).append([offset, 0])

    def _done(self, feed: _Feed, partition: int, offset: int) -> None:
        pending = feed.progress.get(partition)
        if not pending:
            return
        for entry in pending:
            if entry[0] == offset:
                entry[1] = 1
                break
        last = None
        while pending and pending[0][1]:
            last = pending.popleft()[0]
        if last is None:
            return
        tp = TopicPartition(self.names.tasks(feed.handler), partition, last + 1)
        with contextlib.suppress(KafkaException):  # revoked meanwhile: the task may be delivered again
            feed.consumer.commit(offsets=[tp], asynchronous=True)


def _poll_batch(consumer: Consumer, limit: int, wait: float) -> list[Message]:
    first = consumer.poll(wait)
    return [] if first is None else [first, *consumer.consume(limit - 1, 0)]
