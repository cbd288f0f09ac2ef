"""Sticky rollout keys for records that did not come through the gateway (Kafka-ingested channels).

The gateway sends the key in the `quasar-rollout-key` header; a record written straight to a channel
topic has none, so the worker derives it from the channel's compiled `rollout_key`: a header of the
record, its Kafka key (`"$kafka_key"`), or a JSONLogic expression over
`{data, metadata, headers, key, ...}`. The bucket is `app.engine.rollout_bucket(key)`; it is an argument
of the engine run and never written into the message data (Orion quirk 15).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.channels import CompiledChannel
from app.engine.executor import rollout_bucket
from app.governance.decision import Admission
from app.governance.governor import rollout_key

__all__ = ["record_rollout_bucket", "record_rollout_key"]


def record_rollout_key(
    channel: CompiledChannel | None, key: bytes | str | None, headers: Mapping[str, str], data: Any, metadata: Any
) -> str | None:
    """The sticky key of a Kafka record on `channel` (None: no `rollout_key`, or it yields nothing)."""
    if channel is None or channel.rollout is None:
        return None  # the common case costs one attribute read
    text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    adm = Admission(channel, headers, "", key=text or None, data=data, metadata=metadata)
    return rollout_key(adm)


def record_rollout_bucket(
    channel: CompiledChannel | None, key: bytes | str | None, headers: Mapping[str, str], data: Any, metadata: Any
) -> int | None:
    """`rollout_bucket` of `record_rollout_key`, or None (the engine then picks a random bucket)."""
    sticky = record_rollout_key(channel, key, headers, data, metadata)
    return rollout_bucket(sticky) if sticky is not None else None
