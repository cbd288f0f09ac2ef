"""An instance's durable state, the events that change it and the effects a transition asks for.

State and events are pydantic models because they travel as JSON (the changelog, the instance
event topic); effects are plain frozen dataclasses the runtime interprets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "INSTANCE_ID",
    "SIGNAL_TYPES",
    "TERMINAL",
    "Branch",
    "CancelChild",
    "CancelTimer",
    "Effect",
    "Event",
    "FanOut",
    "Finished",
    "InstanceState",
    "InstanceStatus",
    "ParentRef",
    "Pending",
    "PublishExternalTask",
    "ReleaseSlot",
    "RequestSlot",
    "RunTask",
    "ScheduleTimer",
    "SignalEvent",
    "SignalRejected",
    "SlotGranted",
    "StartChild",
    "StartEvent",
    "StepError",
    "StepResultEvent",
    "TimerFiredEvent",
    "valid_instance_id",
]

InstanceStatus = Literal["scheduled", "running", "waiting", "paused", "completed", "failed", "cancelled"]
TERMINAL: frozenset[str] = frozenset({"completed", "failed", "cancelled"})
SIGNAL_TYPES: tuple[str, ...] = ("pause", "resume", "cancel", "update_context", "custom")
INSTANCE_ID = r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,199}$"
_INSTANCE_ID = re.compile(INSTANCE_ID)


def valid_instance_id(value: object) -> bool:
    return isinstance(value, str) and bool(_INSTANCE_ID.match(value))


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StepError(_Model):
    code: str = Field(default="STEP_FAILED", max_length=64)
    message: str = Field(default="", max_length=4096)


class ParentRef(_Model):
    instance_id: str
    key: str
    attempt: int


# --- events (records on the instance event topic, keyed by instance id) ------------------------


class StartEvent(_Model):
    type: Literal["start"] = "start"
    instance_id: str = Field(pattern=INSTANCE_ID)
    flow_id: str
    flow_version: int = Field(ge=1)
    data: Any = Field(default_factory=dict)
    metadata: dict[str, Any] = Field(default_factory=dict)
    idempotency_key: str | None = None
    parent: ParentRef | None = None
    schedule_id: str | None = None


class StepResultEvent(_Model):
    """A leaf finished: a task ran, an external worker answered, a child instance ended."""

    type: Literal["step_result"] = "step_result"
    instance_id: str
    key: str
    attempt: int = Field(ge=1)
    ok: bool
    output: Any = None
    # For `task` steps at the top level: the context's new `data` after the function ran.
    data: Any = None
    error: StepError | None = None


class TimerFiredEvent(_Model):
    type: Literal["timer"] = "timer"
    instance_id: str
    timer_id: str
    due: float
    fired_at: float


class SignalEvent(_Model):
    type: Literal["signal"] = "signal"
    instance_id: str
    signal_id: str = Field(min_length=1, max_length=128)
    signal: Literal["pause", "resume", "cancel", "update_context", "custom"]
    name: str | None = Field(default=None, max_length=128)
    payload: Any = None


class SlotGranted(_Model):
    """The concurrency gate let this instance run."""

    type: Literal["slot_granted"] = "slot_granted"
    instance_id: str


Event = Annotated[
    StartEvent | StepResultEvent | TimerFiredEvent | SignalEvent | SlotGranted,
    Field(discriminator="type"),
]


# --- state --------------------------------------------------------------------------------------


class Branch(_Model):
    """One leaf step in flight. `key` is the step id, `<for_each id>[<i>]` or `<parallel id>.<step id>`."""

    key: str
    step_id: str
    owner: str | None = None  # the for_each / parallel step this branch belongs to
    index: int | None = None
    attempt: int = 1
    phase: Literal["running", "waiting", "backoff"] = "running"
    timer: str | None = None  # the pending timer (delay due, step timeout, backoff)
    task_id: str | None = None  # external task id or child instance id
    started_at: float = 0.0


class FanOut(_Model):
    """Progress of a `for_each` or `parallel` step."""

    step_id: str
    total: int
    next_index: int = 0
    items: list[Any] = Field(default_factory=list)
    results: dict[int, Any] = Field(default_factory=dict)


class Pending(_Model):
    """A signal that arrived before a `wait_for_signal` asked for it (kept in arrival order)."""

    signal_id: str
    name: str
    payload: Any = None


class InstanceState(_Model):
    id: str
    flow_id: str
    flow_version: int
    status: InstanceStatus = "running"
    paused: bool = False
    admitted: bool = True  # False while a concurrency gate has not granted a slot
    context: dict[str, Any] = Field(default_factory=dict)
    cursor: str | None = None
    branches: dict[str, Branch] = Field(default_factory=dict)
    fanout: FanOut | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    timers: dict[str, float] = Field(default_factory=dict)
    inbox: list[Pending] = Field(default_factory=list)
    output: Any = None
    error: StepError | None = None
    parent: ParentRef | None = None
    idempotency_key: str | None = None
    schedule_id: str | None = None
    concurrency_key: str | None = None
    created_at: float = 0.0
    updated_at: float = 0.0
    events: int = 0
    signals_seen: list[str] = Field(default_factory=list)  # recent signal ids, for duplicate delivery
    timeline: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


# --- effects (what the runtime must do after the new state is stored) ---------------------------


@dataclass(frozen=True, slots=True)
class RunTask:
    """Run a `task` step's function on `context`; answer with a `StepResultEvent`."""

    instance_id: str
    key: str
    step_id: str
    attempt: int
    context: dict[str, Any]
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class PublishExternalTask:
    """Publish to `quasar.tasks.<handler>`; a worker answers on the results topic."""

    instance_id: str
    task_id: str
    handler: str
    key: str
    attempt: int
    input: Any
    deadline: float | None


@dataclass(frozen=True, slots=True)
class StartChild:
    parent_id: str
    key: str
    attempt: int
    child_id: str
    flow_id: str
    flow_version: int
    data: Any


@dataclass(frozen=True, slots=True)
class CancelChild:
    child_id: str


@dataclass(frozen=True, slots=True)
class ScheduleTimer:
    instance_id: str
    timer_id: str
    due: float


@dataclass(frozen=True, slots=True)
class CancelTimer:
    instance_id: str
    timer_id: str


@dataclass(frozen=True, slots=True)
class RequestSlot:
    gate: str
    instance_id: str
    limit: int


@dataclass(frozen=True, slots=True)
class ReleaseSlot:
    gate: str
    instance_id: str


@dataclass(frozen=True, slots=True)
class Finished:
    """The instance reached a terminal status; a parent (if any) gets a `StepResultEvent`."""

    instance_id: str
    status: str
    output: Any
    error: StepError | None
    parent: ParentRef | None
    schedule_id: str | None


@dataclass(frozen=True, slots=True)
class SignalRejected:
    instance_id: str
    signal_id: str
    reason: str


Effect = (
    RunTask
    | PublishExternalTask
    | StartChild
    | CancelChild
    | ScheduleTimer
    | CancelTimer
    | RequestSlot
    | ReleaseSlot
    | Finished
    | SignalRejected
)
