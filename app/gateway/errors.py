"""THE one place that turns errors into HTTP answers: `{"error": {"code", "message"}}` with Orion's codes.

`app.errors.QuasarError` subclasses carry their own code and status; FastAPI/Starlette errors (unknown
route, wrong method, request validation) and anything unexpected are mapped here so every response of
the gateway, data and admin alike, has the same shape.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import Response

from app.errors import QuasarError, Timeout
from app.observability.metrics import ERRORS

__all__ = [
    "ChannelTimeout",
    "MethodNotAllowed",
    "RequestTimeout",
    "error_body",
    "error_response",
    "install_error_handlers",
    "json_response",
]

log = logging.getLogger("quasar.gateway")

# Starlette raises plain HTTPExceptions for routing failures; these are Orion's codes for them.
_HTTP_CODES: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    408: "REQUEST_TIMEOUT",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    415: "UNSUPPORTED_MEDIA_TYPE",
    431: "REQUEST_HEADER_FIELDS_TOO_LARGE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    500: "INTERNAL_ERROR",
    502: "BAD_GATEWAY",
    503: "SERVICE_UNAVAILABLE",
    504: "TIMEOUT",
}


class ChannelTimeout(Timeout):
    """A channel's `timeout_ms` (or the gateway's processing timeout) expired: Orion answers 504 `TIMEOUT`
    (the engine's own connector timeouts keep `TIMEOUT_ERROR`)."""

    code = "TIMEOUT"


class MethodNotAllowed(QuasarError):
    code, status = "METHOD_NOT_ALLOWED", 405


class RequestTimeout(QuasarError):
    """The client did not send its whole body within `body_read_timeout_ms` (slow or stalled client)."""

    code, status = "REQUEST_TIMEOUT", 408


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON response serialised with orjson (the hot path never goes through `json`)."""
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type="application/json")


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


def error_response(exc: QuasarError, headers: dict[str, str] | None = None) -> Response:
    """The standard error answer for a Quasar error (its `details`, when set, ride along); counted in
    `errors_total` here, so answers built outside the exception handlers (a 429) count too."""
    ERRORS.labels(exc.code).inc()
    return json_response(exc.to_body(), exc.status, headers)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err.get("loc", ()) if p not in ("body", "query", "path"))
        parts.append(f"{loc}: {err.get('msg', 'invalid')}" if loc else str(err.get("msg", "invalid")))
    return "; ".join(parts) or "Invalid request"


async def _quasar_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuasarError)
    headers = {"retry-after": "1"} if exc.status in (429, 503) else None
    return error_response(exc, headers)


async def _http_handler(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "INTERNAL_ERROR" if exc.status_code >= 500 else "BAD_REQUEST")
    if exc.status_code == 404 and exc.detail in (None, "Not Found"):
        message = f"No route matches {request.method} {request.url.path}"
    elif exc.status_code == 405 and exc.detail in (None, "Method Not Allowed"):
        message = f"Method {request.method} not allowed on {request.url.path}"
    else:
        message = str(exc.detail)
    ERRORS.labels(code).inc()
    return json_response(error_body(code, message), exc.status_code, dict(exc.headers or {}))


async def _validation_handler(request: Request, exc: Exception) -> Response:
    # Orion has no 422: malformed parameters or bodies are a 400 BAD_REQUEST with the field errors.
    assert isinstance(exc, RequestValidationError)
    body = error_body("BAD_REQUEST", _validation_message(exc))
    ERRORS.labels("BAD_REQUEST").inc()
    return json_response(body, 400)


# nginx's "client closed request": what the access metrics record for a request whose client went away
# before its answer (no client ever sees it).
_CLIENT_CLOSED_REQUEST = 499


async def _disconnect_handler(request: Request, exc: Exception) -> Response:
    # The client closed the connection before its request was read or answered: nobody is left to
    # answer and nothing failed here (it is never an unhandled error or a 500).
    log.debug("client disconnected before the answer to %s %s", request.method, request.url.path)
    return Response(status_code=_CLIENT_CLOSED_REQUEST)


async def _unexpected_handler(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    ERRORS.labels("INTERNAL_ERROR").inc()
    return json_response(error_body("INTERNAL_ERROR", "Internal server error"), 500)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers on `app` (called once by `create_app`)."""
    app.add_exception_handler(QuasarError, _quasar_handler)
    app.add_exception_handler(StarletteHTTPException, _http_handler)
    app.add_exception_handler(RequestValidationError, _validation_handler)
    app.add_exception_handler(ClientDisconnect, _disconnect_handler)
    app.add_exception_handler(Exception, _unexpected_handler)
