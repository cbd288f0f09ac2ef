"""Connector errors, inside the one hierarchy of `app.errors` (code + HTTP status)."""

from __future__ import annotations

from app.errors import EngineFailure, Forbidden, QuasarError

__all__ = ["ConnectorError", "ConnectorNotFound", "UpstreamStatus", "UrlBlocked"]


class ConnectorError(QuasarError):
    """An external system failed (network error, bad reply) after the configured retries."""

    code, status = "CONNECTOR_ERROR", 502
    retryable = True
    # False for failures that say nothing about the system's health (its breaker ignores them)
    counts_for_breaker = True


class UpstreamStatus(ConnectorError):
    """An http connector answered with a non-2xx status; `details` carries it."""

    def __init__(self, connector: str, upstream_status: int, body: str = "") -> None:
        super().__init__(
            f"connector '{connector}' answered HTTP {upstream_status}",
            details={"upstream_status": upstream_status, "body": body[:512]},
        )
        self.upstream_status = upstream_status
        self.counts_for_breaker = upstream_status >= 500
        self.retryable = upstream_status >= 500 or upstream_status in (408, 429)


class UrlBlocked(Forbidden):
    """SSRF guard: the URL resolves to an address the connector may not reach."""

    code = "SSRF_BLOCKED"


class ConnectorNotFound(EngineFailure):
    """A task names a connector that does not exist, is disabled or has the wrong type."""

    code = "CONNECTOR_NOT_FOUND"
    retryable = False
