"""Request-scoped log context (request id, channel, workflow, trace id) in contextvars.

structlog's contextvars store is the one place: the gateway binds the request id per HTTP request
(each request runs in its own task, so bindings never leak between requests); the worker binds a
record's ids only around slow-path work and failures (binding per record would cost the hot loop).
Ids travel between processes in Kafka headers (`x-request-id`, `traceparent`, `quasar-trace-id`).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator, Mapping

import structlog

from app.kafka import headers as H

__all__ = [
    "bind",
    "bound",
    "clear",
    "context_from_headers",
    "current",
    "parse_traceparent",
]

_TRACEPARENT = re.compile(r"^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_KEYS = ("request_id", "channel", "workflow", "trace_id")


def bind(**values: str | None) -> None:
    """Bind non-empty values for the rest of the current task/context."""
    structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v})


def clear() -> None:
    structlog.contextvars.clear_contextvars()


def current() -> dict[str, object]:
    """What is bound now (for tests and for copying into Kafka headers)."""
    return dict(structlog.contextvars.get_contextvars())


@contextlib.contextmanager
def bound(**values: str | None) -> Iterator[None]:
    """Bind values for a block, restoring the previous ones afterwards."""
    tokens = structlog.contextvars.bind_contextvars(**{k: v for k, v in values.items() if v})
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)


def parse_traceparent(value: str | None) -> str | None:
    """The 32-hex trace id of a valid W3C `traceparent`, else None (all-zero ids are invalid)."""
    if not value:
        return None
    m = _TRACEPARENT.match(value.strip().lower())
    if m is None or m.group(1) == "ff" or set(m.group(2)) == {"0"} or set(m.group(3)) == {"0"}:
        return None
    return m.group(2)


def context_from_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Log context carried by a Kafka record's headers (see `app.kafka.headers.header_map`)."""
    out: dict[str, str] = {}
    if rid := headers.get(H.REQUEST_ID):
        out["request_id"] = rid
    if channel := headers.get(H.CHANNEL):
        out["channel"] = channel
    trace = parse_traceparent(headers.get(H.TRACEPARENT)) or headers.get(H.TRACE_ID)
    if trace:
        out["trace_id"] = trace
    return out
