"""CORS for browsers: preflight answers and `Access-Control-*` headers, global and per channel.

Global policy: the `QUASAR_CORS_*` settings (Orion's `[cors]`). A data request that resolves to a channel
with a `config.cors` object uses that channel's policy (fields it leaves out come from the global one).
Orion also refuses a channel request from an origin not in the channel's list with 403 before any work;
that check stays in the channel guards (`app/gateway/data.py`). Pure ASGI, one concern: requests
without an `Origin` header pass through untouched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.errors import QuasarError
from app.gateway.errors import error_body, json_response
from app.observability.metrics import ERRORS
from app.settings import Settings

__all__ = ["CorsMiddleware", "CorsPolicy"]

_DATA_PREFIX = "/api/v1/data/"
_ORIGIN = b"origin"
_REQUEST_METHOD = b"access-control-request-method"
_REQUEST_HEADERS = b"access-control-request-headers"


def _lower(items: Iterable[str]) -> frozenset[str]:
    return frozenset(i.strip().lower() for i in items if i.strip())


@dataclass(frozen=True, slots=True)
class CorsPolicy:
    """Who may call from a browser, with which methods and headers, and for how long preflights cache."""

    allowed_origins: frozenset[str] = frozenset()
    allowed_methods: frozenset[str] = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
    allowed_headers: frozenset[str] = frozenset()
    allow_credentials: bool = False
    max_age: int = 600
    expose_headers: tuple[str, ...] = field(default=("x-request-id",))

    @classmethod
    def from_settings(cls, settings: Settings) -> CorsPolicy:
        return cls(
            allowed_origins=frozenset(settings.cors_allowed_origins),
            allowed_methods=frozenset(m.upper() for m in settings.cors_allowed_methods),
            allowed_headers=_lower(settings.cors_allowed_headers),
            allow_credentials=settings.cors_allow_credentials,
            max_age=settings.cors_max_age,
            expose_headers=tuple(settings.cors_expose_headers),
        )

    def for_channel(self, cors: Mapping[str, Any] | None) -> CorsPolicy:
        """This (global) policy with a channel's `config.cors` fields on top."""
        if not cors:
            return self
        origins, methods, headers = (cors.get(k) for k in ("allowed_origins", "allowed_methods", "allowed_headers"))
        credentials, max_age = cors.get("allow_credentials"), cors.get("max_age")
        return CorsPolicy(
            allowed_origins=frozenset(map(str, origins)) if isinstance(origins, list) else self.allowed_origins,
            allowed_methods=frozenset(str(m).upper() for m in methods)
            if isinstance(methods, list)
            else self.allowed_methods,
            allowed_headers=_lower(map(str, headers)) if isinstance(headers, list) else self.allowed_headers,
            allow_credentials=credentials if isinstance(credentials, bool) else self.allow_credentials,
            max_age=max_age if type(max_age) is int and max_age >= 0 else self.max_age,
            expose_headers=self.expose_headers,
        )

    def allows_origin(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin in self.allowed_origins

    def origin_headers(self, origin: str) -> list[tuple[bytes, bytes]]:
        """Headers of an answer to an allowed origin (actual requests and preflights)."""
        # With credentials the browser refuses `*`: echo the origin instead (and say the answer varies).
        value = "*" if "*" in self.allowed_origins and not self.allow_credentials else origin
        out = [(b"access-control-allow-origin", value.encode("latin-1")), (b"vary", b"Origin")]
        if self.allow_credentials:
            out.append((b"access-control-allow-credentials", b"true"))
        return out

    def preflight(self, origin: str, method: str, requested: str) -> tuple[int, list[tuple[bytes, bytes]], str]:
        """(status, headers, refusal reason) of a preflight."""
        if not self.allows_origin(origin):
            return 403, [], f"Origin '{origin}' is not allowed"
        if method.upper() not in self.allowed_methods:
            return 403, [], f"Method '{method}' is not allowed for cross-origin requests"
        asked = _lower(requested.split(",")) if requested else frozenset()
        if "*" not in self.allowed_headers:
            refused = sorted(asked - self.allowed_headers)
            if refused:
                return 403, [], f"Header(s) {', '.join(refused)} not allowed for cross-origin requests"
        headers = self.origin_headers(origin)
        headers.append((b"access-control-allow-methods", ", ".join(sorted(self.allowed_methods)).encode()))
        if asked:
            headers.append((b"access-control-allow-headers", ", ".join(sorted(asked)).encode("latin-1")))
        headers.append((b"access-control-max-age", str(self.max_age).encode()))
        return 204, headers, ""


class CorsMiddleware:
    """Answer preflights and add CORS headers to answers for allowed origins."""

    def __init__(self, app: ASGIApp, *, settings: Settings, state: Any) -> None:
        self.app = app
        self.policy = CorsPolicy.from_settings(settings)
        self.state = state  # the app state: `data_service` resolves a data path to its channel

    def policy_for(self, path: str, method: str) -> CorsPolicy:
        if not path.startswith(_DATA_PREFIX):
            return self.policy
        service = getattr(self.state, "data_service", None)
        if service is None:
            return self.policy
        try:
            _, _, channel = service.resolve(method, path[len(_DATA_PREFIX) :])
        except QuasarError:  # no such route: the request answers 404 by itself
            return self.policy
        document = channel.channel.document  # the compiled channel's validated ChannelDoc
        cors = document.config.cors if document is not None else None
        return self.policy.for_channel(cors.model_dump(exclude_none=True)) if cors is not None else self.policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = requested_method = requested_headers = None
        for name, value in scope["headers"]:
            if name == _ORIGIN:
                origin = value.decode("latin-1")
            elif name == _REQUEST_METHOD:
                requested_method = value.decode("latin-1")
            elif name == _REQUEST_HEADERS:
                requested_headers = value.decode("latin-1")
        if origin is None:
            await self.app(scope, receive, send)
            return
        if scope["method"] == "OPTIONS" and requested_method is not None:
            policy = self.policy_for(scope["path"], requested_method.upper())
            status, headers, reason = policy.preflight(origin, requested_method, requested_headers or "")
            if status != 204:
                ERRORS.labels("FORBIDDEN").inc()
                await json_response(error_body("FORBIDDEN", reason), status)(scope, receive, send)
                return
            await send({"type": "http.response.start", "status": 204, "headers": headers})
            await send({"type": "http.response.body", "body": b""})
            return
        policy = self.policy_for(scope["path"], scope["method"])
        if not policy.allows_origin(origin):
            await self.app(scope, receive, send)  # no CORS headers: the browser keeps the answer from the page
            return
        extra = policy.origin_headers(origin)
        if policy.expose_headers:
            extra.append((b"access-control-expose-headers", ", ".join(policy.expose_headers).encode()))

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_cors)
