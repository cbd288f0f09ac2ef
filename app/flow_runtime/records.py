"""Record formats, keys and partitioning of the flow topics (one place for every reader and writer).

- `<prefix>flows.events`: instance events (start, step result, timer, signal, slot granted), gate
  requests and schedule events, keyed by instance id / `~gate/<gate>` / `~schedule/<id>`.
- `<prefix>flows.state`: the changelog, same keys and partition count; value = `{"kind", "state"}`.
- `<prefix>flows.results`: completions from external workers (any client, any partitioner); the
  runner forwards each one to the events partition of its instance.
- `<prefix>tasks.<handler>`: tasks for external workers, keyed by instance id.

Quasar picks the partition itself (`partition_for`), so every producer agrees with the state's
partitioning whatever its client's default partitioner is.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import orjson
from pydantic import TypeAdapter

from app.flows.gate import GateEvent, GateState
from app.flows.instance import Event, InstanceState
from app.flows.schedule import ScheduleEvent, ScheduleState

__all__ = [
    "GATE_PREFIX",
    "SCHEDULE_PREFIX",
    "AnyEvent",
    "decode_event",
    "decode_state",
    "encode",
    "encode_state",
    "partition_for",
    "state_key",
]

GATE_PREFIX = "~gate/"  # `~` never appears in an instance id, so the key spaces cannot collide
SCHEDULE_PREFIX = "~schedule/"

AnyEvent = Event | GateEvent | ScheduleEvent
_EVENT: TypeAdapter[Event] = TypeAdapter(Event)
StateKind = Literal["instance", "gate", "schedule"]
AnyState = InstanceState | GateState | ScheduleState


def partition_for(key: str, partitions: int) -> int:
    """The events/state partition of a key: stable across processes, clients and restarts."""
    return int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big") % partitions


def event_key(event: AnyEvent) -> str:
    if isinstance(event, GateEvent):
        return GATE_PREFIX + event.gate
    if isinstance(event, ScheduleEvent):
        return SCHEDULE_PREFIX + event.schedule_id
    return event.instance_id


def state_key(state: AnyState) -> str:
    if isinstance(state, GateState):
        return GATE_PREFIX + state.gate
    if isinstance(state, ScheduleState):
        return SCHEDULE_PREFIX + state.schedule_id
    return state.id


def encode(model: Any) -> bytes:
    return orjson.dumps(model.model_dump(mode="json", exclude_none=False))


def decode_event(value: bytes) -> AnyEvent:
    """One events-topic record -> event; raises ValueError (pydantic's) when malformed."""
    raw = orjson.loads(value)
    if not isinstance(raw, dict):
        raise ValueError("an event must be a JSON object")
    kind = raw.get("type")
    if kind in ("gate_request", "gate_release"):
        return GateEvent.model_validate(raw)
    if kind in ("schedule_fire", "schedule_instance_ended"):
        return ScheduleEvent.model_validate(raw)
    return _EVENT.validate_python(raw)


def encode_state(state: AnyState) -> bytes:
    kind: StateKind = (
        "gate" if isinstance(state, GateState) else "schedule" if isinstance(state, ScheduleState) else "instance"
    )
    return orjson.dumps({"kind": kind, "state": state.model_dump(mode="json")})


def decode_state(value: bytes) -> AnyState:
    raw = orjson.loads(value)
    kind = raw.get("kind")
    if kind == "gate":
        return GateState.model_validate(raw["state"])
    if kind == "schedule":
        return ScheduleState.model_validate(raw["state"])
    return InstanceState.model_validate(raw["state"])
