"""Security headers on every gateway answer (Orion's list, seed 004 "Network Security").

The API answers JSON only, so the Content-Security-Policy forbids everything; the Swagger UI page
(`/docs`) gets a policy that lets it load its own (locally served) script and styles.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeadersMiddleware"]

_COMMON: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
)
_API_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
_DOCS_CSP = (
    b"content-security-policy",
    b"default-src 'none'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'",
)
_HSTS = (b"strict-transport-security", b"max-age=31536000; includeSubDomains")
_DOCS_PATHS = ("/docs", "/docs/oauth2-redirect")


class SecurityHeadersMiddleware:
    """Add the security headers to every HTTP answer; HSTS only when the gateway serves TLS."""

    def __init__(self, app: ASGIApp, *, tls: bool = False) -> None:
        self.app = app
        base = [*_COMMON, _HSTS] if tls else list(_COMMON)
        self.api_headers = [*base, _API_CSP]
        self.docs_headers = [*base, _DOCS_CSP]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = self.docs_headers if scope["path"] in _DOCS_PATHS else self.api_headers

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *extra]
            await send(message)

        await self.app(scope, receive, send_with_headers)
