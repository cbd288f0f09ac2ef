"""The function registry and the one task-function protocol.

Every task function, built-in or connector-backed, is a `FunctionSpec`: a name, a `compile`
factory that turns the task's `input` into a `CompiledFunction` at workflow-compile time (JSONLogic
inside inputs is compiled there, once), and whether it has side effects (dry-run swaps those for
recorders). A compiled function is awaited through `arun`; functions that never do IO also offer a
synchronous `run`, which lets the executor process a whole message without an `await` per task.

Connector-backed functions (http_call, db_*, cache_*, mongo_read, publish_kafka, channel_call)
are registered here as known names whose runtime is supplied later: until then running one fails
with "function X needs a connector runtime", while validation accepts them.

Custom functions register through the `quasar.functions` entry-point group: each entry point
loads a `FunctionSpec` (or a zero-argument callable returning one, or a list of them).
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from app.engine.budget import WorkBudget

if TYPE_CHECKING:
    from app.engine.message import Message

__all__ = [
    "ENTRY_POINT_GROUP",
    "AsyncFunction",
    "CompiledFunction",
    "FunctionFactory",
    "FunctionInputError",
    "FunctionRegistry",
    "FunctionSpec",
    "SyncFunction",
    "TaskContext",
]

ENTRY_POINT_GROUP = "quasar.functions"
_log = logging.getLogger("quasar.engine.registry")


class FunctionInputError(Exception):
    """A task's `input` does not fit its function; `field` is relative to `input` (`rules[0].message`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class TaskContext:
    """Per-message execution state handed to every task function.

    One instance per processed message; the executor updates `workflow_id`/`task_id` as it goes.
    `services` is whatever the runtime passed in `RunOptions.services` (connectors, producers).
    A function that returns a failing status (>= 500) may set `reason` to explain it, and a
    function that writes to the context may set `changes` to a new list of `(path, old, new)`.
    """

    __slots__ = (
        "budget",
        "calls",
        "changes",
        "channel",
        "deadline",
        "engine",
        "reason",
        "services",
        "task_id",
        "workflow_id",
    )

    def __init__(
        self,
        channel: str,
        *,
        services: Any = None,
        deadline: float | None = None,
        engine: Any = None,
        calls: list[dict[str, Any]] | None = None,
        budget: WorkBudget | None = None,
    ) -> None:
        self.channel = channel
        self.budget = budget if budget is not None else WorkBudget()
        self.services = services
        self.deadline = deadline
        self.engine = engine
        self.calls = calls
        self.workflow_id = ""
        self.task_id = ""
        self.reason: str | None = None
        # (path, old_value, new_value) written by the current task, for the audit trail
        self.changes: Sequence[tuple[str, Any, Any]] = []


@runtime_checkable
class CompiledFunction(Protocol):
    """A task function bound to its compiled input. Returns an Orion status code.

    200 ok; 400/4xx recorded and continue; 299 filter halt; 298 filter skip; >= 500 failure.
    Raising `app.errors.ValidationFailed` / `Timeout` / any other exception is a task error.
    """

    is_async: bool

    def run(self, message: Message, ctx: TaskContext) -> int: ...

    async def arun(self, message: Message, ctx: TaskContext) -> int: ...


class SyncFunction(ABC):
    """Base for functions without IO: `run` does the work, `arun` just calls it."""

    is_async = False

    @abstractmethod
    def run(self, message: Message, ctx: TaskContext) -> int: ...

    async def arun(self, message: Message, ctx: TaskContext) -> int:
        return self.run(message, ctx)


class AsyncFunction(ABC):
    """Base for functions that await IO: only `arun` is meaningful."""

    is_async = True

    def run(self, message: Message, ctx: TaskContext) -> int:
        raise RuntimeError(f"{type(self).__name__} is asynchronous; await arun()")

    @abstractmethod
    async def arun(self, message: Message, ctx: TaskContext) -> int: ...


FunctionFactory = Callable[[Mapping[str, Any]], CompiledFunction]


@dataclass(frozen=True)
class FunctionSpec:
    """A named task function: `compile(input)` raises `FunctionInputError` on a bad input shape."""

    name: str
    compile: FunctionFactory
    side_effects: bool = False
    needs_runtime: bool = False
    description: str = ""
    input_schema: Mapping[str, Any] | None = None  # JSON Schema of `input` (listed by the admin API)


class FunctionRegistry:
    """Name -> `FunctionSpec`. Engines and validators take one; `default_registry()` builds it."""

    def __init__(self, specs: Iterable[FunctionSpec] = ()) -> None:
        self._specs: dict[str, FunctionSpec] = {}
        for spec in specs:
            self.register(spec)

    def register(self, spec: FunctionSpec, *, replace: bool = False) -> None:
        """Add a function; replacing an existing name needs `replace=True` (connector runtimes do)."""
        if spec.name in self._specs and not replace:
            raise ValueError(f"function {spec.name!r} is already registered")
        self._specs[spec.name] = spec

    def get(self, name: str) -> FunctionSpec | None:
        return self._specs.get(name)

    def __contains__(self, name: object) -> bool:
        return name in self._specs

    def names(self) -> list[str]:
        return sorted(self._specs)

    def copy(self) -> FunctionRegistry:
        return FunctionRegistry(self._specs.values())

    def load_entry_points(self, group: str = ENTRY_POINT_GROUP) -> list[str]:
        """Register custom functions from installed entry points; returns the names added.

        A broken plugin is logged and skipped so one bad package cannot stop the runtime.
        """
        added: list[str] = []
        for ep in entry_points(group=group):
            try:
                obj = ep.load()
                specs = _as_specs(obj() if callable(obj) and not isinstance(obj, FunctionSpec) else obj)
            except Exception:
                _log.exception("failed to load task function entry point %s", ep.name)
                continue
            for spec in specs:
                self.register(spec, replace=True)
                added.append(spec.name)
        return added


def _as_specs(obj: Any) -> list[FunctionSpec]:
    if isinstance(obj, FunctionSpec):
        return [obj]
    if isinstance(obj, list | tuple) and all(isinstance(s, FunctionSpec) for s in obj):
        return list(obj)
    raise TypeError(f"entry point must provide a FunctionSpec or a list of them, got {type(obj).__name__}")
