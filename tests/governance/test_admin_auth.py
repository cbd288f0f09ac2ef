"""Admin API authentication: every admin route answers 401 without or with wrong credentials (bearer and
custom-header modes), constant-time comparison, `env://` keys resolved at use; the CLI sends the key."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI

from app.gateway.app import create_app
from app.governance.auth import AdminAuth, extract_key, key_matches
from app.settings import Settings

KEY = "s3cr3t-admin-key"


def _admin_routes(app: FastAPI) -> Iterator[tuple[str, str]]:
    """Every admin operation, from the app's own OpenAPI document (so new routes are swept too)."""
    for path, ops in app.openapi()["paths"].items():
        if path.startswith("/api/v1/admin"):
            for method in ops:
                yield method.upper(), re.sub(r"\{[^}]+\}", "x", path)


async def _sweep(settings: Settings, good: dict[str, str], bad: list[dict[str, str]]) -> int:
    app = create_app(settings)
    routes = list(_admin_routes(app))
    assert len(routes) >= 20, routes  # the whole admin API is mounted
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        for method, path in routes:
            for headers in [{}, *bad]:
                r = await http.request(method, path, headers=headers, json={})
                assert r.status_code == 401, (method, path, headers, r.status_code, r.text)
                assert r.json()["error"]["code"] == "UNAUTHORIZED"
                assert KEY not in r.text
            r = await http.request(method, path, headers=good, json={})
            assert r.status_code != 401, (
                method,
                path,
                r.text,
            )  # past auth (503/400/404: no config store here)
    return len(routes)


async def test_every_admin_route_needs_the_bearer_key() -> None:
    settings = Settings(admin_auth_enabled=True, admin_api_key=KEY)
    bad = [
        {"Authorization": "Bearer wrong"},
        {"Authorization": KEY},  # bearer mode needs the scheme
        {"Authorization": f"Basic {KEY}"},
        {"X-API-Key": KEY},  # wrong header for this mode
        {"Authorization": f"Bearer {KEY}x"},
    ]
    await _sweep(settings, {"Authorization": f"Bearer {KEY}"}, bad)


async def test_every_admin_route_needs_the_custom_header_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUASAR_TEST_ADMIN_KEY", KEY)
    settings = Settings(
        admin_auth_enabled=True, admin_api_key="env://QUASAR_TEST_ADMIN_KEY", admin_auth_header="X-API-Key"
    )
    bad = [
        {"X-API-Key": "wrong"},
        {"Authorization": f"Bearer {KEY}"},
        {"X-API-Key": "env://QUASAR_TEST_ADMIN_KEY"},
    ]
    await _sweep(settings, {"X-API-Key": KEY}, bad)


async def test_auth_disabled_is_open_and_health_never_needs_auth() -> None:
    app = create_app(Settings())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        r = await http.get("/api/v1/admin/workflows")
        assert r.status_code != 401
    app = create_app(Settings(admin_auth_enabled=True, admin_api_key=KEY))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        assert (await http.get("/healthz")).status_code == 200


def test_enabled_without_a_key_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="admin_api_key"):
        AdminAuth(True, None)
    with pytest.raises(ValueError, match="admin_api_key"):
        create_app(Settings(admin_auth_enabled=True))


def test_unresolvable_env_key_matches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QUASAR_TEST_MISSING_KEY", raising=False)
    assert not key_matches("", ["env://QUASAR_TEST_MISSING_KEY"])
    assert not key_matches("anything", ["env://QUASAR_TEST_MISSING_KEY"])
    assert not key_matches(None, ["k"])
    assert key_matches("k", ["other", "k"])


def test_extract_key() -> None:
    assert extract_key({"authorization": "Bearer abc"}, "Authorization") == "abc"
    assert extract_key({"authorization": "bearer   abc "}, "authorization") == "abc"
    assert extract_key({"authorization": "Bearer "}, "Authorization") is None
    assert extract_key({"authorization": "Token abc"}, "Authorization") is None
    assert extract_key({"x-api-key": " abc "}, "X-API-Key") == "abc"
    assert extract_key({}, "X-API-Key") is None
