"""Helpers for the worker/DLQ tests: topics, channel activation, producing, reading results back."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from app.config_store import Activate, ConfigReader, ConfigWriter, Create, NewVersion, Update
from app.kafka import headers as H
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import producer_config, reader_config
from app.kafka.names import TopicNames
from app.kafka.producer import produce_sync
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings
from app.worker.runner import ChannelWorker

__all__ = ["COMPLEX", "Runtime", "read_records"]

# Orion's benchmark workflow C (no parse_json: data.* reads are null, so the "standard" tier applies).
COMPLEX: dict[str, Any] = {
    "name": "complex",
    "condition": True,
    "tasks": [
        {
            "id": "standard_tier",
            "name": "Standard tier",
            "condition": {"<": [{"var": "data.amount"}, 100]},
            "function": {
                "name": "map",
                "input": {"mappings": [{"path": "data.order.tier", "logic": "standard"}]},
            },
        },
        {
            "id": "enrich",
            "name": "Enrich",
            "function": {
                "name": "map",
                "input": {"mappings": [{"path": "data.order.rid", "logic": {"var": "metadata.rid"}}]},
            },
        },
    ],
}


def read_records(
    settings: Settings,
    topic: str,
    *,
    until: Callable[[list[Message]], bool],
    timeout: float = 20.0,
    partitions: list[int] | None = None,
    isolation: str = "read_committed",
) -> list[Message]:
    """Read `topic` from the beginning (all or the given partitions) until `until(records)` holds."""
    deadline = time.monotonic() + timeout
    if partitions is None:
        admin = create_admin(settings)
        # The worker creates output topics when it sees the channel: wait for it, bounded.
        while (n := topic_partitions(admin).get(topic)) is None:
            if time.monotonic() > deadline:
                raise AssertionError(f"topic {topic} does not exist after {timeout}s")
            time.sleep(0.05)  # polling topic metadata (no record to wait for yet)
        partitions = list(range(n))
    consumer = Consumer(reader_config(settings, **{"isolation.level": isolation}))
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    out: list[Message] = []
    try:
        while not until(out):
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met on {topic} within {timeout}s; read {len(out)} records")
            for msg in consumer.consume(1000, 0.2):
                if msg.error() is None:
                    out.append(msg)
    finally:
        consumer.close()
    return out


class Runtime:
    """Fixed topics of a test prefix, a config writer and workers started on demand (stopped at the end)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings))
        self.reader = ConfigReader(settings, name="test-admin")
        self.writer = ConfigWriter(self.reader)
        self.producer = Producer(producer_config(settings, **{"linger.ms": 0}))
        self.workers: list[ChannelWorker] = []

    async def activate(
        self,
        channel: str,
        workflow: Mapping[str, Any] = COMPLEX,
        *,
        output: bool = True,
        channel_type: str = "async",
        config: Mapping[str, Any] | None = None,
        envelope: str | None = "quasar",
    ) -> int:
        """Create + activate workflow `channel` and channel `channel`; returns the config offset.

        The channel reads `{"data", "metadata"}` envelopes unless `envelope` says otherwise (None: the
        default of a `protocol: kafka` channel, raw)."""
        await self.writer.apply("workflow", channel, Create(dict(workflow)))
        await self.writer.apply("workflow", channel, Activate())
        doc = {
            "name": channel,
            "channel_type": channel_type,
            "protocol": "kafka",
            "workflow_id": channel,
            "config": {"output": output, **({"envelope": envelope} if envelope else {}), **(config or {})},
        }
        await self.writer.apply("channel", channel, Create(doc))
        return (await self.writer.apply("channel", channel, Activate())).offset

    async def new_workflow_version(self, workflow_id: str, workflow: Mapping[str, Any]) -> int:
        await self.writer.apply("workflow", workflow_id, NewVersion())
        await self.writer.apply("workflow", workflow_id, Update(dict(workflow)))
        return (await self.writer.apply("workflow", workflow_id, Activate())).offset

    async def worker(self, **kwargs: Any) -> ChannelWorker:
        worker = ChannelWorker(self.settings, **kwargs)
        self.workers.append(worker)
        await worker.start()
        return worker

    def send(
        self,
        channel: str,
        value: bytes | dict[str, Any] | list[Any],
        *,
        key: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Message:
        raw = value if isinstance(value, bytes) else orjson.dumps(value)
        hdrs = [(k, v.encode()) for k, v in (headers or {}).items()]
        return produce_sync(
            self.producer, self.names.channel(channel), raw, key or uuid.uuid4().hex, headers=hdrs or None
        )

    def outputs(self, channel: str, n: int, timeout: float = 20.0) -> list[Message]:
        return read_records(self.settings, self.names.output(channel), until=lambda r: len(r) >= n, timeout=timeout)

    def dlq(self, n: int, timeout: float = 20.0) -> list[Message]:
        """The dead letters (replay markers left out), once there are at least `n`."""
        return _real(read_records(self.settings, self.names.dlq, until=lambda r: len(_real(r)) >= n, timeout=timeout))

    def traces(self, until: Callable[[list[Message]], bool], timeout: float = 20.0) -> list[Message]:
        return read_records(self.settings, self.names.traces, until=until, timeout=timeout)

    async def close(self) -> None:
        for worker in self.workers:
            await worker.stop()
        await self.reader.stop()
        await asyncio.to_thread(self.producer.flush, 5)


def _real(records: list[Message]) -> list[Message]:
    return [m for m in records if not (m.key() or b"").startswith(b"__marker__/")]


def dlq_headers(msg: Message) -> dict[str, str]:
    return H.header_map(msg.headers())
