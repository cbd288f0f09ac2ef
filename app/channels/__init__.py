"""Channels compiled once per config version: `compile_channel(id, definition, topics) -> CompiledChannel`.

Lower layers (config store, governance) and upper ones (gateway, worker) all read the compiled channel;
this package imports only the engine's document model and JSONLogic, and the topic names.
"""

from __future__ import annotations

from app.channels.compile import KAFKA_KEY, ChannelInvalid, compile_channel, compile_route
from app.channels.compiled import (
    CREDENTIAL_HEADERS,
    CachePolicy,
    CompiledChannel,
    DedupPolicy,
    GovernancePolicy,
    HeaderPolicy,
    InputGuards,
    RateLimitPolicy,
    RetryPolicy,
    RolloutKey,
    RoutePattern,
    TracingPolicy,
)

__all__ = [
    "CREDENTIAL_HEADERS",
    "KAFKA_KEY",
    "CachePolicy",
    "ChannelInvalid",
    "CompiledChannel",
    "DedupPolicy",
    "GovernancePolicy",
    "HeaderPolicy",
    "InputGuards",
    "RateLimitPolicy",
    "RetryPolicy",
    "RolloutKey",
    "RoutePattern",
    "TracingPolicy",
    "compile_channel",
    "compile_route",
]
