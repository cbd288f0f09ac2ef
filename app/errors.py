"""The one error hierarchy. Each error knows its Orion error code and HTTP status.

Pure: no HTTP or Kafka imports. The gateway maps these to `{"error": {"code", "message"}}`
in one place; the worker maps them to DLQ headers.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "BadRequest",
    "CircuitOpen",
    "Conflict",
    "EngineFailure",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "PolicyRefused",
    "QuasarError",
    "RateLimited",
    "ResponseTooLarge",
    "ServiceUnavailable",
    "TestSuiteFailed",
    "Timeout",
    "Unauthorized",
    "UnsupportedMediaType",
    "ValidationFailed",
]


class QuasarError(Exception):
    """Base error: `code` is Orion's error code, `status` the HTTP status it maps to."""

    code: str = "INTERNAL_ERROR"
    status: int = 500
    retryable: bool = False
    # A 500 whose message names an operator's mistake (e.g. an unset env var), never data: shown as is
    # instead of Orion's fixed "internal engine error" text.
    expose_message: bool = False

    def __init__(self, message: str, *, details: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details

    def to_body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.details is not None:
            body["details"] = self.details
        return {"error": body}


class BadRequest(QuasarError):
    code, status = "BAD_REQUEST", 400


class ValidationFailed(QuasarError):
    """Engine `Validation` errors (parse_xml, publish_*, channel_call config) and invalid documents."""

    code, status = "VALIDATION_ERROR", 400


class TestSuiteFailed(ValidationFailed):
    """A version's test suite failed, so it may not be activated (details: the suite report)."""

    __test__ = False  # not a pytest test class
    code = "TEST_SUITE_FAILED"


class Unauthorized(QuasarError):
    code, status = "UNAUTHORIZED", 401


class Forbidden(QuasarError):
    code, status = "FORBIDDEN", 403


class PolicyRefused(QuasarError):
    """A release policy refused the change (the config fold decides; every instance the same way)."""

    code, status = "POLICY_REFUSED", 409


class NotFound(QuasarError):
    code, status = "NOT_FOUND", 404


class Conflict(QuasarError):
    code, status = "CONFLICT", 409


class PayloadTooLarge(QuasarError):
    code, status = "PAYLOAD_TOO_LARGE", 413


class UnsupportedMediaType(QuasarError):
    code, status = "UNSUPPORTED_MEDIA_TYPE", 415


class RateLimited(QuasarError):
    code, status = "RATE_LIMITED", 429


class EngineFailure(QuasarError):
    """Any other engine failure: Orion answers 500 ENGINE_ERROR with a fixed message."""

    code, status = "ENGINE_ERROR", 500
    retryable = True


class ResponseTooLarge(QuasarError):
    code, status = "RESPONSE_TOO_LARGE", 502


class ServiceUnavailable(QuasarError):
    code, status = "SERVICE_UNAVAILABLE", 503
    retryable = True


class CircuitOpen(QuasarError):
    """An open breaker refused the call. Not retried by the worker: the breaker stays open for its
    recovery timeout, so a retry within the backoff is refused again (and would count every attempt
    as a rejection); the request fails fast with 503, as in Orion."""

    code, status = "CIRCUIT_OPEN", 503
    retryable = False


class Timeout(QuasarError):
    """Engine/connector timeouts (Orion: TIMEOUT_ERROR, 504)."""

    code, status = "TIMEOUT_ERROR", 504
    retryable = True
