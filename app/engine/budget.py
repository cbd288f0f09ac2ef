"""The work one record may cost: wall time across its tasks and `channel_call`s, shared by the whole
call tree of one request (pure, no I/O).

A workflow runs on the worker's event loop; without a bound, one record could hold the loop (and with
it every other partition) for seconds: a `channel_call` fan-out of a 20-byte request blocked every
channel for 12.3 s. The executor checks the time budget before each task and `channel_call` counts its
calls here; rules bound the arrays they iterate themselves (`jsonlogic.MAX_ITERATED_ITEMS`).
"""

from __future__ import annotations

import time

from app.errors import QuasarError

__all__ = ["DEFAULT_MAX_CALLS", "DEFAULT_TIME_BUDGET_S", "BudgetExceeded", "WorkBudget"]

DEFAULT_TIME_BUDGET_S = 10.0
DEFAULT_MAX_CALLS = 100


class BudgetExceeded(QuasarError):
    """A record used up its work budget: deterministic (the same record would again), never retried."""

    code, status = "WORK_BUDGET_EXCEEDED", 422


class WorkBudget:
    """Time and `channel_call` count of one request, shared by every channel it reaches."""

    __slots__ = ("calls", "max_calls", "started", "time_s")

    def __init__(self, time_s: float | None = DEFAULT_TIME_BUDGET_S, max_calls: int | None = DEFAULT_MAX_CALLS) -> None:
        self.time_s = time_s
        self.max_calls = max_calls
        self.started = time.monotonic()
        self.calls = 0

    def check_time(self, before: str) -> None:
        """Raise `BudgetExceeded` when the time budget is spent (called between tasks)."""
        if self.time_s is not None and time.monotonic() - self.started > self.time_s:
            raise BudgetExceeded(f"record exceeded its work budget of {self.time_s:g}s before {before}")

    def count_call(self, route: str) -> None:
        """Count one `channel_call`; raise `BudgetExceeded` beyond `max_calls` for the request."""
        self.calls += 1
        if self.max_calls is not None and self.calls > self.max_calls:
            raise BudgetExceeded(f"request exceeded {self.max_calls} channel_calls (at {route})")
