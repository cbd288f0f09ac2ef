"""How the CLI reaches the admin API: over HTTP (`--url`) or directly on the config topic.

Both modes speak the same HTTP API, so every command has one code path:

- gateway mode: httpx to `<url>/api/v1/admin/...`, with the admin credential as a bearer token or a
  custom header (`--token`, `--auth-header`);
- direct mode (no `--url`): the admin router served in-process (httpx's ASGI transport) over a real
  ConfigReader/ConfigWriter on `QUASAR_KAFKA_BOOTSTRAP`: no gateway needed, same answers.

Errors come back as `CliError` carrying the exit code scripts rely on (see `EXIT_CODES`).
"""

from __future__ import annotations

import contextlib
import getpass
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from app.settings import Settings

__all__ = ["EXIT_CODES", "AdminClient", "CliError", "exit_code_for", "open_client"]

# Documented in `quasar --help`; never renumber.
EXIT_CODES = {"ok": 0, "error": 1, "usage": 2, "not_found": 3, "conflict": 4}


def exit_code_for(status: int) -> int:
    if status in (400, 413, 415, 422):
        return EXIT_CODES["usage"]
    if status == 404:
        return EXIT_CODES["not_found"]
    if status == 409:
        return EXIT_CODES["conflict"]
    return EXIT_CODES["error"]


@dataclass
class CliError(Exception):
    """A failed command: `code`/`message` as the API said, `exit_code` for the shell."""

    message: str
    code: str = "ERROR"
    exit_code: int = 1
    status: int | None = None
    details: Any = None

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class AdminClient:
    """Calls the admin (and data) API; `mode` is "gateway" or "direct"."""

    def __init__(self, http: httpx.AsyncClient, mode: str) -> None:
        self.http = http
        self.mode = mode

    async def request(self, method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        """`path` is absolute (`/api/v1/...`). Returns the decoded JSON body (None for 204)."""
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        content = orjson.dumps(json) if json is not None else None
        headers = {"content-type": "application/json"} if content is not None else {}
        try:
            resp = await self.http.request(method, path, content=content, params=clean, headers=headers)
        except httpx.TransportError as exc:
            raise CliError(f"cannot reach {self.http.base_url}: {exc}", "UNREACHABLE", 1) from None
        if resp.status_code == 204 or not resp.content:
            if resp.status_code >= 400:
                raise CliError(f"HTTP {resp.status_code}", "HTTP_ERROR", exit_code_for(resp.status_code))
            return None
        try:
            body = resp.json()
        except ValueError:
            body = None
        if resp.status_code >= 400:
            err = body.get("error") if isinstance(body, dict) else None
            if isinstance(err, dict):
                raise CliError(
                    str(err.get("message")),
                    str(err.get("code")),
                    exit_code_for(resp.status_code),
                    resp.status_code,
                    err.get("details"),
                )
            raise CliError(
                resp.text[:500] or f"HTTP {resp.status_code}",
                "HTTP_ERROR",
                exit_code_for(resp.status_code),
                resp.status_code,
            )
        return body

    async def admin(self, method: str, path: str, **kw: Any) -> Any:
        return await self.request(method, f"/api/v1/admin{path}", **kw)


def _auth_headers(token: str | None, header: str) -> dict[str, str]:
    if not token:
        return {}
    if header.lower() == "authorization":
        return {"Authorization": token if token.lower().startswith("bearer ") else f"Bearer {token}"}
    return {header: token}


@contextlib.asynccontextmanager
async def open_client(
    url: str | None,
    *,
    token: str | None = None,
    auth_header: str = "Authorization",
    timeout_s: float = 60.0,
    settings: Settings | None = None,
) -> AsyncIterator[AdminClient]:
    """An AdminClient for `url`, or a direct one on the config topic when `url` is None."""
    if url:
        headers = _auth_headers(token, auth_header)
        async with httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers, timeout=timeout_s) as http:
            yield AdminClient(http, "gateway")
        return
    async with _direct(settings or Settings(), timeout_s) as client:
        yield client


@contextlib.asynccontextmanager
async def _direct(settings: Settings, timeout_s: float) -> AsyncIterator[AdminClient]:
    from fastapi import FastAPI

    from app.config_store.reader import ConfigReader
    from app.config_store.writer import ConfigWriter
    from app.errors import QuasarError
    from app.gateway.admin import router
    from app.gateway.errors import install_error_handlers
    from app.kafka.config import bootstrap_of

    try:
        bootstrap_of(settings)
    except QuasarError as exc:
        raise CliError(f"{exc.message}; or pass --url http://HOST:PORT to use a running gateway", exc.code, 1) from None
    from app.gateway.admin_releases import router as releases_router
    from app.identity import Principal

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(router)
    app.include_router(releases_router)
    from app.gateway.admin_channels import router as channels_ops_router

    app.include_router(channels_ops_router)
    # Direct mode writes the config topic itself (its access is the credential): audit it as the OS user.
    cli_principal = Principal(f"cli:{getpass.getuser()}@{socket.gethostname()}", "admin")
    app.state.admin_auth = lambda _request: cli_principal
    # The CLI never serves data, so the reader skips building an engine.
    reader = ConfigReader(settings, engine_factory=None, name="quasar-cli")
    try:
        await reader.ready(timeout_s)
    except QuasarError as exc:
        await reader.stop()
        raise CliError(exc.message, exc.code, 1) from None
    app.state.settings = settings
    app.state.config_reader = reader
    app.state.config_writer = ConfigWriter(reader)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://quasar-direct", timeout=timeout_s) as http:
            yield AdminClient(http, "direct")
    finally:
        await reader.stop()
