"""The http connector: one pooled `httpx.AsyncClient` per connector, SSRF-guarded, with retries.

Orion's rules: URL = connector url (trailing `/` trimmed) + `/` + path (leading `/` trimmed);
headers, lowest precedence first: connector headers, auth, `content-type: application/json`
(only with a body), task headers. Retries on network errors and 5xx/429/408 with exponential
backoff; a timeout is not retried (it already spent the caller's budget). The response must be
2xx and JSON and is read as a stream, stopped as soon as it exceeds `max_response_size`.

Redirects are followed (at most `MAX_REDIRECTS`, each hop SSRF-checked), but a hop to another origin
(scheme, host or port) carries none of the headers the connector or the task set: httpx strips only
`Authorization`, and an `X-API-Key` or connector header used to reach the redirect target.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote

import httpcore
import httpx
import orjson

from app.connectors.errors import ConnectorError, UpstreamStatus
from app.connectors.retry import with_retries
from app.connectors.ssrf import GuardedBackend, Resolver
from app.digits import parse_uint
from app.engine.models import ApiKeyAuth, BasicAuth, BearerAuth, HttpConnectorConfig
from app.errors import ResponseTooLarge, Timeout, ValidationFailed
from app.secrets import resolve_secret

__all__ = ["DEFAULT_TIMEOUT_MS", "HttpConnector", "HttpResult", "build_url"]

DEFAULT_TIMEOUT_MS = 30_000
RETRY_STATUSES = frozenset({408, 429})
MAX_REDIRECTS = 10


def build_url(base: str, path: str) -> str:
    """Connector url + task path (Orion's join). The path stays below the base: dot segments (also
    percent-encoded) that climb out of it, encoded slashes and control characters (CRLF) are refused
    with `ValidationFailed` (a path built from request data must not reach other endpoints)."""
    rest = path.split("?", 1)[0]
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        raise ValidationFailed("http_call path contains control characters")
    depth = 0
    for segment in rest.split("/"):
        decoded = unquote(segment)
        if "/" in decoded or "\\" in decoded:
            raise ValidationFailed(f"http_call path segment {segment!r} encodes a path separator")
        if decoded == "..":
            depth -= 1
            if depth < 0:
                raise ValidationFailed(f"http_call path {path!r} escapes the connector's base URL")
        elif decoded not in ("", "."):
            depth += 1
    return base.rstrip("/") + "/" + path.lstrip("/")


class HttpResult:
    """A finished call: status, parsed JSON body (None when empty), attempts made."""

    __slots__ = ("attempts", "body", "status")

    def __init__(self, status: int, body: Any, attempts: int) -> None:
        self.status = status
        self.body = body
        self.attempts = attempts


class _GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with its connection pool built on a given network backend."""

    def __init__(self, backend: httpcore.AsyncNetworkBackend, max_connections: int) -> None:
        super().__init__(trust_env=False)
        # httpx 0.28 offers no hook for the network backend; rebuild the pool it created with ours
        # (same SSL context). A test pins that every connection goes through `backend`.
        ssl_context = self._pool._ssl_context
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context,
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=5.0,
            network_backend=backend,
        )


class HttpConnector:
    """Calls one http connector. Create once per connector config; `aclose()` when replaced."""

    def __init__(
        self,
        name: str,
        config: HttpConnectorConfig,
        *,
        env: Mapping[str, str] | None = None,
        resolver: Resolver | None = None,
        network_backend: httpcore.AsyncNetworkBackend | None = None,
        max_connections: int = 100,
    ) -> None:
        if not config.url.startswith(("http://", "https://")):
            raise ConnectorError(f"connector '{name}': url must start with http:// or https://")
        self.name = name
        self.config = config
        self._env = env
        inner = network_backend if network_backend is not None else httpcore.AnyIOBackend()
        backend = inner if config.allow_private_urls else GuardedBackend(inner, resolver)
        self._client = httpx.AsyncClient(
            transport=_GuardedTransport(backend, max_connections),
            follow_redirects=False,  # followed by `_send`, which strips credentials across origins
            trust_env=False,
        )

    def url(self, path: str) -> str:
        return build_url(self.config.url, path)

    def headers(self, task_headers: Mapping[str, str], *, has_body: bool) -> httpx.Headers:
        """Orion's header precedence; auth secrets are resolved here, at use."""
        headers = httpx.Headers()
        for k, v in self.config.headers.items():
            headers[k] = str(resolve_secret(v, self._env))
        auth = self.config.auth
        if isinstance(auth, BearerAuth):
            headers["authorization"] = f"Bearer {resolve_secret(auth.token, self._env)}"
        elif isinstance(auth, BasicAuth):
            user = resolve_secret(auth.username, self._env)
            password = resolve_secret(auth.password, self._env)
            headers["authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        elif isinstance(auth, ApiKeyAuth):
            headers[auth.header] = str(resolve_secret(auth.key, self._env))
        if has_body:
            headers["content-type"] = "application/json"
        for k, v in task_headers.items():
            headers[k] = v
        return headers

    async def call(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        has_body: bool = False,
        headers: Mapping[str, str] | None = None,
        timeout_ms: int | None = None,
        deadline: float | None = None,
    ) -> HttpResult:
        """One logical call (with retries). Raises `UpstreamStatus`, `ConnectorError`, `Timeout`,
        `ResponseTooLarge` or `UrlBlocked`."""
        url = self.url(path)
        hdrs = self.headers(headers or {}, has_body=has_body)
        content = orjson.dumps(body) if has_body else None
        timeout_s = (timeout_ms or self.config.timeout_ms or DEFAULT_TIMEOUT_MS) / 1000.0
        attempts = 0

        async def attempt() -> HttpResult:
            nonlocal attempts
            attempts += 1
            budget = timeout_s
            if deadline is not None:
                budget = min(budget, deadline - time.time())
                if budget <= 0:
                    raise Timeout(f"http_call to connector '{self.name}': deadline exceeded")
            timer = asyncio.timeout(budget)
            try:
                async with timer:
                    return await self._once(method, url, hdrs, content, budget, attempts)
            except Exception as exc:
                # The transport may turn our cancellation into its own error: trust the timer.
                if timer.expired() or isinstance(exc, TimeoutError | httpx.TimeoutException):
                    text = f"http_call to connector '{self.name}' timed out after {budget:.3g}s"
                    raise Timeout(text) from exc
                raise

        return await with_retries(attempt, self.config.retry, _retryable, deadline=deadline)

    async def _once(
        self,
        method: str,
        url: str,
        headers: httpx.Headers,
        content: bytes | None,
        budget: float,
        attempts: int,
    ) -> HttpResult:
        limit = self.config.max_response_size
        try:
            request = self._client.build_request(
                method, url, headers=headers, content=content, timeout=httpx.Timeout(budget)
            )
            response = await self._send(request, headers)
        except httpx.TimeoutException:
            raise
        except httpx.TransportError as exc:
            raise _NetworkError(f"connector '{self.name}': {type(exc).__name__}: {exc}") from exc
        try:
            declared = response.headers.get("content-length")
            if declared is not None and (parse_uint(declared) or 0) > limit:
                raise ResponseTooLarge(
                    f"response of connector '{self.name}' is {declared} bytes; max_response_size is {limit}"
                )
            chunks: list[bytes] = []
            size = 0
            try:
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > limit:
                        raise ResponseTooLarge(
                            f"response of connector '{self.name}' exceeds max_response_size ({limit} bytes)"
                        )
                    chunks.append(chunk)
            except httpx.TimeoutException:
                raise
            except httpx.TransportError as exc:
                raise _NetworkError(f"connector '{self.name}': reading the response failed: {exc}") from exc
        finally:
            await response.aclose()
        raw = b"".join(chunks)
        if not 200 <= response.status_code < 300:
            raise UpstreamStatus(self.name, response.status_code, raw.decode("utf-8", "replace"))
        if not raw.strip():
            return HttpResult(response.status_code, None, attempts)
        try:
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            err = ConnectorError(f"connector '{self.name}' answered {response.status_code} with a non-JSON body")
            err.retryable = False
            raise err from exc
        return HttpResult(response.status_code, parsed, attempts)

    async def _send(self, request: httpx.Request, sent: httpx.Headers) -> httpx.Response:
        """Send, following redirects; a hop to another origin drops every header we set but content-type."""
        origin = request.url.copy_with(path="/", query=None, fragment=None)
        for _ in range(MAX_REDIRECTS + 1):
            response = await self._client.send(request, stream=True)
            following = response.next_request
            if following is None:
                return response
            await response.aclose()
            hop = following.url.copy_with(path="/", query=None, fragment=None)
            if hop != origin:
                for name in sent:
                    if name.lower() != "content-type":
                        following.headers.pop(name, None)
                following.headers.pop("cookie", None)
            request = following
        raise ConnectorError(f"connector '{self.name}': too many redirects")

    async def aclose(self) -> None:
        await self._client.aclose()


class _NetworkError(ConnectorError):
    """A connection could not be made or broke: retryable."""


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, _NetworkError):
        return True
    if isinstance(exc, UpstreamStatus):
        return exc.upstream_status >= 500 or exc.upstream_status in RETRY_STATUSES
    return False
