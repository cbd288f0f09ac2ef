"""`InstanceView`: the gateway's read side of flows, pushed from the state changelog (no polling).

A background thread tails every partition of `flows.state` (no consumer group) and keeps the latest
state of each instance; each new state record wakes the `watch` subscribers of that instance (the
SSE stream) and `wait_for` callers (the start endpoint's sync wait). Readiness: after a marker has
been read back on every partition, the view holds everything written before it started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable

from confluent_kafka import Consumer, Message, Producer, TopicPartition
from pydantic import ValidationError

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
        self._watchers: dict[str, set[asyncio.Queue[InstanceState]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = asyncio.Event()
        self._lock = threading.Lock()
        self.last_error: str | None = None

    async def start(self, catch_up_seconds: float = 60.0) -> None:
        self._loop = asyncio.get_running_loop()
        partitions = topic_partitions(create_admin(self.settings)).get(self.topic, 0)
        if not partitions:
            log.warning("flows: %s does not exist; instance API unavailable", self.topic)
            return
        positions = await self._loop.run_in_executor(None, self._catch_up, partitions, catch_up_seconds)
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
        return self.instances.get(instance_id)

    def find(self, *, flow_id: str | None = None, status: str | None = None) -> list[InstanceState]:
        with self._lock:
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
        consumer.assign([TopicPartition(self.topic, p, o) for p, o in enumerate(positions)])
        try:
            while not self._stopping.is_set():
                msg = consumer.poll(0.2)
                if msg is None or msg.error() is not None:
                    continue
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
        loop = self._loop
        if loop is not None and state.id in self._watchers:
            loop.call_soon_threadsafe(self._notify, state)

    def _notify(self, state: InstanceState) -> None:
        for queue in list(self._watchers.get(state.id, ())):
            with contextlib.suppress(asyncio.QueueFull):
                queue.put_nowait(state)
