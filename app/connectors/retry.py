"""Retry with Orion's exponential backoff: `retry_delay_ms * 2^(n-1)`, capped at 60 s, deadline-aware."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

from app.engine.models import RetryConfig

__all__ = ["MAX_BACKOFF_SECS", "backoff_delay", "with_retries"]

MAX_BACKOFF_SECS = 60.0
T = TypeVar("T")


def backoff_delay(retry: int, retry_delay_ms: int) -> float:
    """Seconds to wait before retry number `retry` (1-based)."""
    if retry < 1:
        raise ValueError("retry numbers start at 1")
    # Cap the exponent first so a large retry count cannot overflow the float.
    return min(retry_delay_ms * (2.0 ** min(retry - 1, 32)) / 1000.0, MAX_BACKOFF_SECS)


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    retry: RetryConfig,
    retryable: Callable[[BaseException], bool],
    *,
    deadline: float | None = None,
    on_retry: Callable[[int, BaseException], None] | None = None,
) -> T:
    """Run `attempt` up to `1 + max_retries` times while it raises a `retryable` error.

    `deadline` (epoch seconds): a retry whose backoff would end after it is not started, the last
    error is raised instead, so retries never outlive the caller.
    """
    n = 0
    while True:
        try:
            return await attempt()
        except Exception as exc:
            n += 1
            if n > retry.max_retries or not retryable(exc):
                raise
            delay = backoff_delay(n, retry.retry_delay_ms)
            if deadline is not None and time.time() + delay >= deadline:
                raise
            if on_retry is not None:
                on_retry(n, exc)
            await asyncio.sleep(delay)
