"""Sticky rollout keys for records that did not come through the gateway (Kafka-ingested channels).

The gateway sends the key in the `quasar-rollout-key` header (`Governance.rollout_key`); a record written
straight to a channel topic has none, so the worker derives it from the channel's `rollout_key`: a header
of the record, its Kafka key (`"$kafka_key"`), or a JSONLogic expression over
`{data, metadata, headers, key}`. The bucket is `app.engine.rollout_bucket(key)`; it is an argument of the
engine run and never written into the message data (Orion quirk 15).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.engine.executor import rollout_bucket
from app.governance.policy import evaluate_key, policy_for

__all__ = ["record_rollout_bucket", "record_rollout_key"]


def record_rollout_key(
    view: Any, key: bytes | str | None, headers: Mapping[str, str], data: Any, metadata: Any
) -> str | None:
    """The sticky key of a Kafka record on channel `view` (None: no `rollout_key`, or it yields nothing)."""
    if view is None or "rollout_key" not in view.config:
        return None  # the common case costs one dict lookup
    rollout = policy_for(view).rollout
    if rollout is None:
        return None
    if rollout.header is not None:
        return headers.get(rollout.header) or None
    if rollout.kafka_key:
        if key is None or key == b"" or key == "":
            return None
        return key.decode("utf-8", "replace") if isinstance(key, bytes) else key
    if rollout.logic is not None:
        text = key.decode("utf-8", "replace") if isinstance(key, bytes) else key
        ctx = {
            "data": data,
            "metadata": metadata,
            "headers": dict(headers),
            "key": text,
            "channel": view.name,
        }
        value = evaluate_key(rollout.logic, ctx, None)
        return None if value in (None, "null", "") else value
    return None


def record_rollout_bucket(
    view: Any, key: bytes | str | None, headers: Mapping[str, str], data: Any, metadata: Any
) -> int | None:
    """`rollout_bucket` of `record_rollout_key`, or None (the engine then picks a random bucket)."""
    sticky = record_rollout_key(view, key, headers, data, metadata)
    return rollout_bucket(sticky) if sticky is not None else None
