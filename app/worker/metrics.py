"""Worker metrics (prometheus_client, process-wide default registry)."""

from __future__ import annotations

from prometheus_client import Counter, Histogram, start_http_server

__all__ = [
    "DLQ_RECORDS",
    "EXPIRED",
    "MESSAGES",
    "MESSAGE_DURATION",
    "RETRIES",
    "start_metrics_server",
]

MESSAGES = Counter(
    "quasar_worker_messages_total",
    "Channel records processed by the worker, by outcome (ok, error, dlq, expired, retry).",
    ["channel", "status"],
)
MESSAGE_DURATION = Histogram(
    "quasar_worker_message_duration_seconds",
    "Time to run a channel's workflows on one record.",
    ["channel"],
    buckets=(0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
DLQ_RECORDS = Counter(
    "quasar_worker_dlq_records_total", "Records sent to the dead letter topic.", ["channel", "code"]
)
RETRIES = Counter("quasar_worker_retries_total", "Retry attempts of retryable failures.", ["channel"])
EXPIRED = Counter(
    "quasar_worker_expired_total", "Requests skipped because their quasar-deadline had passed.", ["channel"]
)


def start_metrics_server(port: int, addr: str = "0.0.0.0") -> None:
    """Serve /metrics on `port` (0 or negative: disabled)."""
    if port > 0:
        start_http_server(port, addr=addr)
