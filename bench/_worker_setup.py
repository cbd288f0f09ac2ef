"""Bench/test helper: topics + an active async channel bound to a workflow, through the real config store."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

__all__ = ["activate_channel", "setup_complex_channel"]


async def activate_channel(
    settings: Any,
    channel: str,
    workflow: Mapping[str, Any],
    *,
    channel_doc: Mapping[str, Any] | None = None,
) -> int:
    """Create + activate `workflow` (id = channel) and the channel; returns the last write's offset."""
    from app.config_store import Activate, ConfigReader, ConfigWriter, Create

    reader = ConfigReader(settings)
    try:
        await reader.ready(30)
        writer = ConfigWriter(reader)
        await writer.apply("workflow", channel, Create(dict(workflow)))
        await writer.apply("workflow", channel, Activate())
        doc = {
            "name": channel,
            "channel_type": "async",
            "protocol": "kafka",
            "workflow_id": channel,
            # The bench records are {"data", "metadata"} envelopes (a Kafka channel's default is raw).
            "config": {"output": True, "envelope": "quasar"},
        }
        doc.update(channel_doc or {})
        await writer.apply("channel", channel, Create(doc))
        result = await writer.apply("channel", channel, Activate())
        return result.offset
    finally:
        await reader.stop()


def setup_complex_channel(
    bootstrap: str, prefix: str, workflow: Mapping[str, Any], tracing: str | None = None
) -> tuple[str, str]:
    """Apply the fixed topics under `prefix`, activate channel `orders`; returns (request, output) topics.
    `tracing` None leaves the channel's default (Kafka-ingested records: failures only)."""
    from app.kafka.admin import create_admin
    from app.kafka.names import TopicNames
    from app.kafka.topics import (
        apply_topics,
        channel_topic_plan,
        fixed_topic_plans,
        load_specs,
        output_topic_plan,
    )
    from app.settings import Settings

    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix, fetch_wait_max_ms=10, session_timeout_ms=3000)
    specs = load_specs()
    plans = [
        *fixed_topic_plans(specs, settings),
        channel_topic_plan(specs, settings, "orders"),
        output_topic_plan(specs, settings, "orders"),
    ]
    apply_topics(create_admin(settings), plans)
    config = {"output": True, "envelope": "quasar", **({"tracing": tracing} if tracing else {})}
    asyncio.run(activate_channel(settings, "orders", workflow, channel_doc={"config": config}))
    names = TopicNames(prefix)
    return names.channel("orders"), names.output("orders")
