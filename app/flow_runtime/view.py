"""`InstanceView`: the gateway's read side of flows, pushed from the state changelog (no polling).

A background thread tails every partition of `flows.state` (no consumer group) and keeps the latest
state of each instance; each new state record wakes the `watch` subscribers of that instance (the
SSE stream) and `wait_for` callers (the start endpoint's sync wait). Readiness: after a marker has
been read back on every partition, the view holds everything written before it started.

Bounded: running instances are all kept (they are the working set, signals and streams need them);
finished ones only up to `flow_view_max_finished` instances and `flow_view_max_finished_bytes` bytes
of state records, least recently written or read first out, and for `flow_view_finished_ttl_secs`
after this view last wrote or read them (its own clock: runners' clocks may be virtual in tests).
An evicted instance is unknown to this gateway (404); its history stays in the changelog.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from pydantic import ValidationError

from app.flow_runtime.idle import IdleFetch
from app.flow_runtime.records import decode_state
from app.flows.instance import InstanceState
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import producer_config, reader_config
from app.kafka.consumer import read_to_end
from app.kafka.names import TopicNames
from app.settings import Settings

__all__ = ["InstanceView"]

log = logging.getLogger(__name__)


class InstanceView:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.topic = TopicNames(settings.topic_prefix).flow_state
        self.instances: dict[str, InstanceState] = {}
        # Finished instances, least recently written or read first: id -> (monotonic time of that, bytes
        # of its state record).
        self._finished: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.finished_bytes = 0
        self.evicted = 0
        # While reading the history back, partition after partition, arrival order is not the order in
        # which instances finished: the bound then drops the oldest by `updated_at` (a heap).
        self._by_age: list[tuple[float, str]] | None = []
        self._watchers: dict[str, set[asyncio.Queue[InstanceState]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = asyncio.Event()
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.idle = IdleFetch.from_settings(settings)  # on Tansu (`quasar dev`): an idle view fetches rarely

    async def start(self, catch_up_seconds: float = 60.0) -> None:
        self._loop = asyncio.get_running_loop()
        partitions = topic_partitions(create_admin(self.settings)).get(self.topic, 0)
        if not partitions:
            log.warning("flows: %s does not exist; instance API unavailable", self.topic)
            return
        positions = await self._loop.run_in_executor(None, self._catch_up, partitions, catch_up_seconds)
        with self._lock:  # from now on arrival order is finishing order: least recently used first out
            ordered = sorted(self._finished.items(), key=lambda item: self.instances[item[0]].updated_at)
            self._finished = OrderedDict(ordered)
            self._by_age = None
        self._ready.set()
        self._thread = threading.Thread(target=self._tail, args=(positions,), name="flow-view", daemon=True)
        self._thread.start()

    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    async def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._thread.join, 5)

    def get(self, instance_id: str) -> InstanceState | None:
        with self._lock:
            entry = self._finished.get(instance_id)
            if entry is not None:  # read: keep it longer (LRU)
                self._finished[instance_id] = (time.monotonic(), entry[1])
                self._finished.move_to_end(instance_id)
            return self.instances.get(instance_id)

    def find(self, *, flow_id: str | None = None, status: str | None = None) -> list[InstanceState]:
        with self._lock:
            self._evict()
            found = list(self.instances.values())
        return [
            s for s in found if (flow_id is None or s.flow_id == flow_id) and (status is None or s.status == status)
        ]

    async def wait_for(
        self, instance_id: str, done: Callable[[InstanceState], bool], seconds: float
    ) -> InstanceState | None:
        """The first state of the instance for which `done` holds, or the latest one after `seconds`."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                async for state in self.watch(instance_id):
                    if done(state):
                        return state
        return self.instances.get(instance_id)

    async def watch(self, instance_id: str) -> AsyncIterator[InstanceState]:
        """The current state (if any), then every new one as it is written."""
        queue: asyncio.Queue[InstanceState] = asyncio.Queue(maxsize=1000)
        self._watchers.setdefault(instance_id, set()).add(queue)
        try:
            current = self.instances.get(instance_id)
            if current is not None:
                yield current
            while True:
                state = await queue.get()
                if current is None or state.events > current.events:
                    current = state
                    yield state
        finally:
            watchers = self._watchers.get(instance_id)
            if watchers is not None:
                watchers.discard(queue)
                if not watchers:
                    self._watchers.pop(instance_id, None)

    # -- the reading thread ----------------------------------------------------------------------

    def _catch_up(self, partitions: int, timeout: float) -> list[int]:
        producer = Producer(producer_config(self.settings, client_id="quasar-flow-view"))
        consumer = Consumer(reader_config(self.settings, client_id="quasar-flow-view"))
        try:
            return [
                read_to_end(producer, consumer, self.topic, p, 0, on_message=self._record, timeout=timeout)
                for p in range(partitions)
            ]
        finally:
            consumer.close()

    def _tail(self, positions: list[int]) -> None:
        consumer = Consumer(reader_config(self.settings, client_id="quasar-flow-view"))
        starts = [TopicPartition(self.topic, p, o) for p, o in enumerate(positions)]
        consumer.assign(starts)
        self.idle.known(starts)
        idle = self.idle
        try:
            while not self._stopping.is_set():
                wait = idle.before_poll(consumer, time.monotonic())
                msg = consumer.poll(0.2 if wait is None else max(0.0, min(0.2, wait)))
                if msg is None or msg.error() is not None:
                    continue
                idle.active()
                idle.seen((msg,))
                self._record(msg)
        except Exception as exc:  # keep the gateway serving what it has; health shows the error
            self.last_error = f"{type(exc).__name__}: {exc}"
            log.exception("flows: instance view stopped")
        finally:
            consumer.close()

    def _record(self, msg: Message) -> None:
        key, value = msg.key(), msg.value()
        if key is None or value is None or key.startswith((b"__marker__/", b"~")):
            return
        try:
            state = decode_state(value)
        except (ValueError, ValidationError):
            return
        if not isinstance(state, InstanceState):
            return
        with self._lock:
            previous = self.instances.get(state.id)
            if previous is not None and previous.events > state.events:
                return  # an older record (a replay by a new owner) never hides a newer state
            self.instances[state.id] = state
            self.finished_bytes -= self._finished.pop(state.id, (0.0, 0))[1]
            if state.terminal:
                self._finished[state.id] = (time.monotonic(), len(value))
                self.finished_bytes += len(value)
                if self._by_age is not None:
                    heapq.heappush(self._by_age, (state.updated_at, state.id))
                self._evict()
        loop = self._loop
        if loop is not None and state.id in self._watchers:
            loop.call_soon_threadsafe(self._notify, state)

    def _evict(self) -> None:
        """Drop finished instances beyond the bounds, least recently used first (under `_lock`)."""
        settings = self.settings
        ttl = settings.flow_view_finished_ttl_secs
        cutoff = time.monotonic() - ttl if ttl > 0 else None
        while self._finished:
            oldest = self._oldest()
            touched = self._finished[oldest][0]
            over = (
                len(self._finished) > settings.flow_view_max_finished
                or self.finished_bytes > settings.flow_view_max_finished_bytes
                or (cutoff is not None and touched < cutoff)
            )
            if not over:
                return
            self.finished_bytes -= self._finished.pop(oldest)[1]
            del self.instances[oldest]
            self.evicted += 1

    def _oldest(self) -> str:
        """The finished instance to drop first: least recently used, or while catching up, oldest finished."""
        while self._by_age:
            updated_at, instance_id = self._by_age[0]
            state = self.instances.get(instance_id)
            if instance_id in self._finished and state is not None and state.updated_at == updated_at:
                return instance_id
            heapq.heappop(self._by_age)  # evicted or written again since
        return next(iter(self._finished))

    def _notify(self, state: InstanceState) -> None:
        for queue in list(self._watchers.get(state.id, ())):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(state)
