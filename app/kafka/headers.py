"""Kafka header names on request, reply and DLQ records (one place; see docs/internals.md)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

__all__ = [
    "ATTEMPT",
    "CHANNEL",
    "CONFIG_OFFSET",
    "CONNECT_PREFIX",
    "CORRELATION_ID",
    "DEADLINE",
    "DLQ_ATTEMPTS",
    "DLQ_CHANNEL",
    "DLQ_CLASS_NAME",
    "DLQ_CONNECTOR_NAME",
    "DLQ_CONTEXT",
    "DLQ_ERROR_CODE",
    "DLQ_ERROR_MESSAGE",
    "DLQ_FIRST_FAILED_AT",
    "DLQ_ORIGINAL_OFFSET",
    "DLQ_ORIGINAL_PARTITION",
    "DLQ_ORIGINAL_TOPIC",
    "DLQ_STACKTRACE",
    "DLQ_STAGE",
    "DLQ_TASK_ID",
    "DLQ_VALUE_DROPPED",
    "EXPLAIN",
    "GATEWAY_SEAL",
    "HEADERS_DROPPED",
    "MODE",
    "REPLY_TO",
    "REQUEST_ID",
    "ROLLOUT_KEY",
    "STATUS",
    "TRACEPARENT",
    "TRACE_ID",
    "RawHeaders",
    "header_map",
]

REQUEST_ID = "x-request-id"
TRACEPARENT = "traceparent"
REPLY_TO = "quasar-reply-to"  # "<topic>:<partition>"
CORRELATION_ID = "quasar-correlation-id"
DEADLINE = "quasar-deadline"  # epoch milliseconds; the worker skips work whose caller gave up
ATTEMPT = "quasar-attempt"
CONFIG_OFFSET = "quasar-config-offset"  # config log position the sender had applied
MODE = "quasar-mode"  # "sync" | "async"
TRACE_ID = "quasar-trace-id"
ROLLOUT_KEY = "quasar-rollout-key"
CHANNEL = "quasar-channel"
STATUS = "quasar-status"  # HTTP status of a reply
GATEWAY_SEAL = "quasar-gateway-seal"  # the gateway governed this record (app/governance/seal.py)
EXPLAIN = "quasar-explain"  # "1": record decision paths in the reply/output (docs/rules.md)

# Propagated input headers left off a produced record because of their size (their count).
HEADERS_DROPPED = "quasar-headers-dropped"

# Dead letters carry Kafka Connect's full errors.deadletterqueue.context.headers set.
CONNECT_PREFIX = "__connect.errors."
DLQ_ORIGINAL_TOPIC = "__connect.errors.topic"
DLQ_ORIGINAL_PARTITION = "__connect.errors.partition"
DLQ_ORIGINAL_OFFSET = "__connect.errors.offset"
DLQ_CONNECTOR_NAME = "__connect.errors.connector.name"  # the channel
DLQ_TASK_ID = "__connect.errors.task.id"  # the failing workflow task ("" before any task ran)
DLQ_STAGE = "__connect.errors.stage"  # VALUE_CONVERTER (decode, guards), TASK_PUT (workflow), KAFKA_PRODUCE
DLQ_CLASS_NAME = "__connect.errors.class.name"  # the failing task's function, else "quasar.worker"
DLQ_ERROR_CODE = "__connect.errors.exception.class.name"  # Quasar's error code
DLQ_ERROR_MESSAGE = "__connect.errors.exception.message"
DLQ_STACKTRACE = "__connect.errors.exception.stacktrace"  # only for unexpected (bug) failures
DLQ_CHANNEL = "quasar-dlq-channel"
DLQ_ATTEMPTS = "quasar-dlq-attempts"
DLQ_FIRST_FAILED_AT = "quasar-dlq-first-failed-at"  # epoch ms of the first failed attempt
# Size in bytes of an original value too big to copy into the DLQ (read it at topic/partition/offset).
DLQ_VALUE_DROPPED = "quasar-dlq-value-dropped"
# Headers a dead letter adds (stripped again when it is replayed).
DLQ_CONTEXT = frozenset(
    {
        DLQ_ORIGINAL_TOPIC,
        DLQ_ORIGINAL_PARTITION,
        DLQ_ORIGINAL_OFFSET,
        DLQ_CONNECTOR_NAME,
        DLQ_TASK_ID,
        DLQ_STAGE,
        DLQ_CLASS_NAME,
        DLQ_ERROR_CODE,
        DLQ_ERROR_MESSAGE,
        DLQ_STACKTRACE,
        DLQ_CHANNEL,
        DLQ_ATTEMPTS,
        DLQ_FIRST_FAILED_AT,
        DLQ_VALUE_DROPPED,
    }
)


RawHeaders = Sequence[tuple[str, str | bytes | None]] | Mapping[str, str | bytes | None] | None
"""Headers as confluent-kafka hands them out (or accepts them)."""


def header_map(headers: RawHeaders) -> dict[str, str]:
    """Kafka headers as a str->str dict (last value wins; undecodable values are dropped)."""
    out: dict[str, str] = {}
    items = headers.items() if isinstance(headers, Mapping) else headers or ()
    for name, value in items:
        if value is None:
            continue
        if isinstance(value, str):
            out[name] = value
            continue
        try:
            out[name] = value.decode()
        except UnicodeDecodeError:
            continue
    return out
