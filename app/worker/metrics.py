"""Worker metrics: defined once in `app.observability.metrics`; re-exported here for the worker's modules."""

from __future__ import annotations

from app.observability.metrics import DLQ_RECORDS, ERRORS, EXPIRED, MESSAGES, RETRIES

__all__ = ["DLQ_RECORDS", "ERRORS", "EXPIRED", "MESSAGES", "RETRIES"]
