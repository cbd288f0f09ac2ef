"""Writing to flows from outside a runner (the gateway, the CLI, tests): starts and signals are events."""

from __future__ import annotations

import hashlib

from app.flow_runtime.records import AnyEvent, encode, event_key, partition_for
from app.flows.instance import valid_instance_id
from app.kafka.names import TopicNames
from app.kafka.producer import AsyncProducer

__all__ = ["FlowClient", "instance_id_for"]


def instance_id_for(flow_id: str, idempotency_key: str) -> str:
    """The instance id a start with `idempotency_key` gets: the same key always names the same instance."""
    candidate = f"{flow_id}:{idempotency_key}"
    if valid_instance_id(candidate):
        return candidate
    return f"{flow_id}:" + hashlib.blake2b(idempotency_key.encode(), digest_size=16).hexdigest()


class FlowClient:
    def __init__(self, producer: AsyncProducer, names: TopicNames, partitions: int) -> None:
        self.producer = producer
        self.topic = names.flow_events
        self.partitions = partitions

    async def send(self, event: AnyEvent) -> None:
        """Produce `event` to its key's partition; returns once it is durable on the cluster."""
        key = event_key(event)
        await self.producer.produce(self.topic, encode(event), key, partition=partition_for(key, self.partitions))
