"""Every error leaves the gateway as `{"error": {"code", "message"}}` with Orion's code and status."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, Query

from app import errors
from app.gateway.errors import ChannelTimeout, install_error_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/raise/{name}")
    async def raise_(name: str) -> None:
        raise {
            "bad": errors.BadRequest("Invalid JSON body"),
            "conflict": errors.Conflict("workflow 'x' was changed meanwhile"),
            "timeout": ChannelTimeout("Workflow execution on channel 'c' exceeded 5ms timeout"),
            "busy": errors.ServiceUnavailable("Channel 'c' is at capacity"),
            "big": errors.PayloadTooLarge("too big"),
            "media": errors.UnsupportedMediaType("not json"),
        }[name]

    @app.get("/typed")
    async def typed(limit: int = Query(..., ge=1)) -> dict[str, int]:
        return {"limit": limit}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    return app


@pytest.fixture
async def client() -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=_app(), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as c:
        yield c


@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("bad", 400, "BAD_REQUEST"),
        ("conflict", 409, "CONFLICT"),
        ("timeout", 504, "TIMEOUT"),
        ("busy", 503, "SERVICE_UNAVAILABLE"),
        ("big", 413, "PAYLOAD_TOO_LARGE"),
        ("media", 415, "UNSUPPORTED_MEDIA_TYPE"),
    ],
)
async def test_quasar_errors_keep_their_code_status_and_message(
    client: httpx.AsyncClient, name: str, status: int, code: str
) -> None:
    r = await client.get(f"/raise/{name}")
    assert r.status_code == status
    body = r.json()
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert set(body) == {"error"}


async def test_503_tells_clients_when_to_retry(client: httpx.AsyncClient) -> None:
    r = await client.get("/raise/busy")
    assert r.headers["retry-after"] == "1"


async def test_unknown_route_is_404_not_found_in_the_standard_shape(client: httpx.AsyncClient) -> None:
    r = await client.get("/nowhere")
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "NOT_FOUND", "message": "No route matches GET /nowhere"}}


async def test_wrong_method_is_405_in_the_standard_shape(client: httpx.AsyncClient) -> None:
    r = await client.delete("/typed")
    assert r.status_code == 405
    assert r.json()["error"]["code"] == "METHOD_NOT_ALLOWED"


async def test_request_validation_is_a_400_naming_the_field(client: httpx.AsyncClient) -> None:
    r = await client.get("/typed", params={"limit": "zero"})
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == "BAD_REQUEST"
    assert "limit" in error["message"]


async def test_unexpected_errors_are_500_without_leaking_internals(client: httpx.AsyncClient) -> None:
    r = await client.get("/boom")
    assert r.status_code == 500
    assert r.json() == {"error": {"code": "INTERNAL_ERROR", "message": "Internal server error"}}
