"""Platform rate limit (Orion's `[rate_limit]`): a token bucket per client address and route class.

Runs before routing, in front of every request but the probes and `/metrics` (an orchestrator must
always reach them). Classes: admin routes (`rate_limit_admin_rps`), data routes (`rate_limit_data_rps`),
everything else (`rate_limit_default_rps`); every class shares `rate_limit_default_burst`. State is per
gateway instance, as in Orion; per-channel limits (shared through Redis) are the channel's `rate_limit`.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import RateLimited
from app.gateway.errors import error_response
from app.settings import Settings

__all__ = ["PlatformRateLimit"]

_EXEMPT = frozenset({"/health", "/healthz", "/readyz", "/metrics"})
_MAX_CLIENTS = 100_000  # buckets kept (least recently used dropped): bounded memory under address churn


class PlatformRateLimit:
    """429 `RATE_LIMITED` (with `retry-after`) once a client's bucket for the route class is empty."""

    def __init__(self, app: ASGIApp, *, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.app = app
        self.burst = float(settings.rate_limit_default_burst)
        self.rates = {
            "admin": settings.rate_limit_admin_rps or settings.rate_limit_default_rps,
            "data": settings.rate_limit_data_rps or settings.rate_limit_default_rps,
            "other": settings.rate_limit_default_rps,
        }
        self._clock = clock
        self._buckets: OrderedDict[tuple[str, str], tuple[float, float]] = OrderedDict()  # -> (tokens, at)

    @staticmethod
    def route_class(path: str) -> str:
        if path.startswith("/api/v1/admin"):
            return "admin"
        if path.startswith("/api/v1/data"):
            return "data"
        return "other"

    def take(self, client: str, klass: str) -> float:
        """Take one token; returns 0 when allowed, else the seconds until the next token."""
        rate, now = self.rates[klass], self._clock()
        key = (client, klass)
        tokens, at = self._buckets.pop(key, (self.burst, now))
        tokens = min(self.burst, tokens + (now - at) * rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / rate
        self._buckets[key] = (tokens, now)
        if len(self._buckets) > _MAX_CLIENTS:
            self._buckets.popitem(last=False)
        return wait

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _EXEMPT:
            await self.app(scope, receive, send)
            return
        client = scope.get("client")
        wait = self.take(client[0] if client else "unknown", self.route_class(scope["path"]))
        if not wait:
            await self.app(scope, receive, send)
            return
        retry = str(max(1, int(wait + 0.999)))
        await error_response(RateLimited("Too many requests"), {"retry-after": retry})(scope, receive, send)
