"""The per-key concurrency gate: at most `limit` admitted instances per concurrency key.

A pure fold keyed by the gate key (`<flow id>/<key value>`); in the runtime its records share the
instance event topic, so one partition owner serializes every request for a key. Requests are
idempotent (a holder or a queued instance asking again changes nothing), grants are FIFO.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["GateEvent", "GateState", "apply_gate"]


class GateEvent(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["gate_request", "gate_release"]
    gate: str = Field(min_length=1, max_length=400)
    instance_id: str
    limit: int = Field(default=1, ge=1)


class GateState(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gate: str
    limit: int = 1
    holders: list[str] = Field(default_factory=list)
    queue: list[str] = Field(default_factory=list)


def apply_gate(state: GateState | None, event: GateEvent) -> tuple[GateState, list[str]]:
    """Apply a request or release; returns the new state and the instance ids granted a slot now."""
    gate = state.model_copy(deep=True) if state is not None else GateState(gate=event.gate, limit=event.limit)
    granted: list[str] = []
    if event.type == "gate_request":
        gate.limit = event.limit  # the newest flow version's limit wins
        if event.instance_id in gate.holders or event.instance_id in gate.queue:
            return gate, granted
        gate.queue.append(event.instance_id)
    else:
        if event.instance_id in gate.holders:
            gate.holders.remove(event.instance_id)
        elif event.instance_id in gate.queue:
            gate.queue.remove(event.instance_id)  # cancelled while queued
    while gate.queue and len(gate.holders) < gate.limit:
        admitted = gate.queue.pop(0)
        gate.holders.append(admitted)
        granted.append(admitted)
    return gate, granted
