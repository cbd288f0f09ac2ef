"""publish_kafka through the runtime's producer, against the real broker."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer

from app.connectors import ConnectorServices, connector_registry
from app.engine.compiler import compile_workflow
from app.engine.executor import Engine, RunOptions
from app.engine.message import Message
from app.kafka.config import consumer_config, producer_config
from app.kafka.producer import AsyncProducer
from app.settings import Settings

KAFKA = {"k": {"name": "event-bus", "connector_type": "kafka", "config": {"brokers": ["ignored:9092"]}}}


def wf(inp: dict[str, Any]) -> Any:
    return compile_workflow(
        {
            "workflow_id": "w",
            "name": "w",
            "tasks": [
                {
                    "id": "p",
                    "name": "p",
                    "function": {"name": "parse_json", "input": {"source": "payload", "target": "order"}},
                },
                {
                    "id": "k",
                    "name": "k",
                    "function": {"name": "publish_kafka", "input": {"connector": "event-bus", **inp}},
                },
            ],
        },
        connector_registry(),
    )


def read_all(settings: Settings, topic: str, n: int, timeout: float = 20.0) -> list[Any]:
    """Read until `n` records arrived (bounded)."""
    cfg = consumer_config(settings, group_id=f"g-{uuid.uuid4().hex[:8]}")
    cfg.update({"auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer = Consumer(cfg)
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.2)
            if msg is not None and msg.error() is None:
                out.append(msg)
    finally:
        consumer.close()
    return out


async def test_publish_kafka_produces_key_value_and_headers(settings: Settings, unique_topic: str) -> None:
    async with AsyncProducer(producer_config(settings)) as producer:
        svc = ConnectorServices(KAFKA, producer=producer)
        engine = Engine(
            {
                "orders": [
                    wf(
                        {
                            "topic": unique_topic,
                            "key_logic": {"var": "data.order.id"},
                            "headers": {"x-kind": "order", "x-total": {"var": "data.order.total"}},
                        }
                    )
                ]
            }
        )
        parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        msg = Message.from_request({"id": "o-1", "total": 12}, {"traceparent": parent})
        await engine.process("orders", msg, RunOptions(services=svc))
        default_value = wf({"topic": unique_topic, "value_logic": {"cat": ["total=", {"var": "data.order.total"}]}})
        await Engine({"orders": [default_value]}).process(
            "orders", Message.from_request({"id": "o-2", "total": 3}), RunOptions(services=svc)
        )
    first, second = read_all(settings, unique_topic, 2)
    assert first.key() == b"o-1"
    assert orjson.loads(first.value()) == {"order": {"id": "o-1", "total": 12}}  # default: JSON(data)
    headers = {k: v.decode() for k, v in first.headers()}
    assert headers["x-kind"] == "order" and headers["x-total"] == "12"
    assert headers["traceparent"].split("-")[1] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert second.key() is None and second.value() == b"total=3"


async def test_publish_kafka_needs_an_existing_kafka_connector(settings: Settings) -> None:
    svc = ConnectorServices({}, producer=None)
    engine = Engine({"orders": [wf({"topic": "t"})]})
    with pytest.raises(Exception, match="An internal engine error"):
        await engine.process("orders", Message.from_request({}), RunOptions(services=svc))
    msg = Message.from_request({})
    w = wf({"topic": "t"})
    w.tasks[1].continue_on_error = True
    await Engine({"orders": [w]}).process("orders", msg, RunOptions(services=svc))
    assert "connector 'event-bus' not found" in msg.errors[0]["message"]


@pytest.mark.parametrize("topic", ["tq.config", "tq.audit", "tq.dlq", "tq.replies", "tq.tasks.x", "__consumer_offsets"])
async def test_publish_kafka_refuses_internal_topics(settings: Settings, topic: str) -> None:
    """Issue 14 item 11: a workflow relaying request data into the config topic created connectors."""
    from app.kafka.names import TopicNames

    async with AsyncProducer(producer_config(settings)) as producer:
        svc = ConnectorServices(KAFKA, producer=producer, topics=TopicNames("tq."))
        for services in (svc, svc.dry()):  # a dry run says so too
            w = wf({"topic": topic})
            w.tasks[1].continue_on_error = True
            msg = Message.from_request({"order": 1})
            await Engine({"orders": [w]}).process("orders", msg, RunOptions(services=services))
            assert "is internal to Quasar" in msg.errors[0]["message"], msg.errors
    assert not TopicNames("tq.").is_internal("tq.ch.orders") and not TopicNames("tq.").is_internal("orders")
