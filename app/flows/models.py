"""Flow and schedule documents (pydantic v2), versioned by the config store like workflows.

A flow is a list of steps run in order; control steps (`router`, `wait_for_signal`'s timeout
branch, `terminal`) jump by step id. `for_each` and `parallel` fan out over *leaf* steps (steps
that await something: `task`, `external_task`, `call_flow`, `delay`, `wait_for_signal`), so an
instance's position is always one step id plus the set of branches in flight: resuming after a
crash needs no call stack.
"""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, model_validator

from app.engine.models import ID_PATTERN, FunctionDoc

__all__ = [
    "LEAF_KINDS",
    "BusinessCalendar",
    "CallFlowStep",
    "ConcurrencyConfig",
    "DelaySpec",
    "DelayStep",
    "ExternalTaskStep",
    "FlowDoc",
    "ForEachStep",
    "LeafStep",
    "ParallelStep",
    "RetryPolicy",
    "RouterBranch",
    "RouterStep",
    "ScheduleDoc",
    "Step",
    "TaskStep",
    "TerminalStep",
    "WaitForSignalStep",
]

STEP_ID = r"^[A-Za-z0-9][A-Za-z0-9_-]*$"
HANDLER = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$"
# Durations: "90s", "1h30m", "3d", "250ms", "2w", or a number of seconds.
DURATION = r"^(\d+(ms|s|m|h|d|w))+$"
Duration = Annotated[str | float, Field(union_mode="left_to_right")]


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class RetryPolicy(_Doc):
    """Attempts include the first one. Backoff grows by `multiplier` per attempt up to `max_backoff`."""

    max_attempts: int = Field(default=1, ge=1, le=100)
    backoff: Duration = "1s"
    multiplier: float = Field(default=2.0, ge=1.0, le=10.0)
    max_backoff: Duration = "1h"
    # Error codes that are retried; empty = every error is retried.
    retry_on: list[str] = Field(default_factory=list)


class _StepBase(_Doc):
    id: str = Field(min_length=1, max_length=64, pattern=STEP_ID)
    name: str | None = None
    retry: RetryPolicy | None = None
    timeout: Duration | None = None
    next: str | None = Field(default=None, description="Step to run afterwards; default: the following step")


class TaskStep(_StepBase):
    """One of the engine's task functions (map, http_call, db_write, ...) on the instance context."""

    type: Literal["task"] = "task"
    function: FunctionDoc


class BusinessCalendar(_Doc):
    """Business days: ISO weekdays in `weekend` (6 = Saturday, 7 = Sunday) and `holidays` are skipped."""

    weekend: list[Annotated[int, Field(ge=1, le=7)]] = Field(default_factory=lambda: [6, 7])
    holidays: list[date] = Field(default_factory=list)


class DelaySpec(_Doc):
    """Exactly one of `duration`, `until` (ISO timestamp) or `until_logic` (JSONLogic -> timestamp).

    A naive timestamp is read in `timezone`. With `business_days`, a duration in whole days counts
    business days, and a due time that falls on a non-business day moves to the next business day.
    `jitter` adds a deterministic offset in `[0, jitter)` (the same on every replay).
    """

    duration: Duration | None = None
    until: str | None = None
    until_logic: Any = None
    timezone: str = "UTC"
    business_days: BusinessCalendar | None = None
    jitter: Duration | None = None

    @model_validator(mode="after")
    def _one_of(self) -> DelaySpec:
        given = [n for n in ("duration", "until", "until_logic") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("a delay needs exactly one of duration, until, until_logic")
        return self


class DelayStep(_StepBase):
    type: Literal["delay"] = "delay"
    delay: DelaySpec


class WaitForSignalStep(_StepBase):
    """Waits for the named custom signal; its payload becomes the step output.

    Without `on_timeout` a timeout fails the instance; with it the instance goes on there."""

    type: Literal["wait_for_signal"] = "wait_for_signal"
    signal: str = Field(min_length=1, max_length=128)
    on_timeout: str | None = None


class ExternalTaskStep(_StepBase):
    """Published to `quasar.tasks.<handler>`; any Kafka client completes it on the results topic."""

    type: Literal["external_task"] = "external_task"
    handler: str = Field(pattern=HANDLER)
    input: Any = Field(default=None, description="JSONLogic over the context; default: the context's data")


class CallFlowStep(_StepBase):
    """Starts a child instance of `flow_id` (pinned `version`) and waits for its outcome."""

    type: Literal["call_flow"] = "call_flow"
    flow_id: str = Field(pattern=ID_PATTERN, max_length=128)
    version: int = Field(ge=1)
    input: Any = Field(default=None, description="JSONLogic over the context; default: the context's data")


class RouterBranch(_Doc):
    condition: Any
    next: str


class RouterStep(_Doc):
    """Jumps to the first branch whose condition is exactly true, else to `default`."""

    type: Literal["router"] = "router"
    id: str = Field(min_length=1, max_length=64, pattern=STEP_ID)
    name: str | None = None
    branches: list[RouterBranch] = Field(min_length=1)
    default: str | None = Field(default=None, description="Default: the following step")


class TerminalStep(_Doc):
    """Ends the instance with `status`; `output` (JSONLogic) is its result, default the context's data."""

    type: Literal["terminal"] = "terminal"
    id: str = Field(min_length=1, max_length=64, pattern=STEP_ID)
    name: str | None = None
    status: Literal["completed", "failed"] = "completed"
    output: Any = None
    error: str | None = None


LeafStep = Annotated[
    TaskStep | DelayStep | WaitForSignalStep | ExternalTaskStep | CallFlowStep,
    Field(discriminator="type"),
]
LEAF_KINDS: tuple[str, ...] = ("task", "delay", "wait_for_signal", "external_task", "call_flow")


class ForEachStep(_Doc):
    """Runs `do` once per item of `items` (JSONLogic -> list), at most `max_items`, `concurrency` at a time.

    Inside `do`, `{"var": "temp_data.item"}` / `temp_data.index` are the item and its position.
    The step output is the list of outputs in item order."""

    type: Literal["for_each"] = "for_each"
    id: str = Field(min_length=1, max_length=64, pattern=STEP_ID)
    name: str | None = None
    items: Any
    max_items: int = Field(default=100, ge=1, le=10_000)
    concurrency: int = Field(default=1, ge=1, le=1_000)
    do: LeafStep
    next: str | None = None


class ParallelStep(_Doc):
    """Runs leaf `steps` concurrently, at most `max_concurrency` in flight; output = {step id: output}."""

    type: Literal["parallel"] = "parallel"
    id: str = Field(min_length=1, max_length=64, pattern=STEP_ID)
    name: str | None = None
    steps: list[LeafStep] = Field(min_length=1, max_length=100)
    max_concurrency: int = Field(default=10, ge=1, le=100)
    next: str | None = None


Step = Annotated[
    TaskStep
    | DelayStep
    | WaitForSignalStep
    | ExternalTaskStep
    | CallFlowStep
    | RouterStep
    | TerminalStep
    | ForEachStep
    | ParallelStep,
    Field(discriminator="type"),
]


class ConcurrencyConfig(_Doc):
    """At most `limit` running instances per value of `key` (JSONLogic over the start input)."""

    key: Any
    limit: int = Field(default=1, ge=1, le=10_000)


class _Managed(_Doc):
    version: int = Field(default=1, ge=1)
    status: Literal["draft", "active", "archived"] = "draft"
    created_at: str | None = None
    updated_at: str | None = None
    activated_at: str | None = None


class FlowDoc(_Managed):
    flow_id: str = Field(validation_alias=AliasChoices("flow_id", "id"), pattern=ID_PATTERN, max_length=128)
    name: str = Field(min_length=1, max_length=255, pattern=r"\S")
    description: str | None = Field(default=None, max_length=2048)
    steps: list[Step] = Field(min_length=1, max_length=500)
    concurrency: ConcurrencyConfig | None = None
    timeout: Duration | None = Field(default=None, description="Whole-instance deadline")
    tags: list[str] = Field(default_factory=list)

    @property
    def id(self) -> str:
        return self.flow_id


class ScheduleDoc(_Managed):
    """A cron trigger: starts `flow_id` (its active version, or `flow_version`) at each fire time."""

    schedule_id: str = Field(validation_alias=AliasChoices("schedule_id", "id"), pattern=ID_PATTERN, max_length=128)
    name: str = Field(min_length=1, max_length=255, pattern=r"\S")
    cron: str = Field(min_length=1, max_length=256)
    timezone: str = "UTC"
    flow_id: str = Field(pattern=ID_PATTERN, max_length=128)
    flow_version: int | None = Field(default=None, ge=1)
    input: dict[str, Any] = Field(default_factory=dict)
    overlap: Literal["allow", "skip", "buffer_one", "cancel_previous"] = "skip"
    enabled: bool = True
    catch_up: Duration = Field(default="0s", description="Missed fires younger than this are run on start-up")

    @property
    def id(self) -> str:
        return self.schedule_id
