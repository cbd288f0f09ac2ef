"""Gateway abuse against the real server stack (`quasar gateway`: uvicorn + httptools, its own process):
oversized and streamed bodies, deeply nested JSON, invalid UTF-8, wrong content types, slow bodies,
header floods and long URLs, bad JSON on admin routes. Every refusal is a clear status with the standard
`{"error": {"code", "message"}}` body, memory stays bounded and the gateway keeps serving.
"""

from __future__ import annotations

import concurrent.futures
import socket
import time
from collections.abc import Iterator

import httpx
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.fixtures.polling import poll
from tests.proof._fuzz_support import (
    FUZZ_ENV,
    SYNC_CHANNEL,
    FuzzStack,
    RawAnswer,
    assert_error_shape,
    raw_exchange,
    rss_bytes,
    stream_until_answered,
)

DATA = f"/api/v1/data/{SYNC_CHANNEL}"
ADMIN = "/api/v1/admin/workflows"
LIMIT = int(FUZZ_ENV["QUASAR_MAX_PAYLOAD_SIZE"])
BODY_TIMEOUT = int(FUZZ_ENV["QUASAR_BODY_READ_TIMEOUT_MS"]) / 1000
JSON = {"content-type": "application/json"}


@pytest.fixture(scope="module")
def http(fuzz_stack: FuzzStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fuzz_stack.gateway_url, timeout=30) as client:
        yield client


def _error(r: httpx.Response | RawAnswer, status: int, code: str) -> str:
    """Assert the status and the standard error body with `code`; returns the message."""
    if isinstance(r, RawAnswer):
        assert r.status == status, (r.status, r.body[:300])
        assert r.headers.get("content-type", "").startswith("application/json"), r.headers
        err = orjson.loads(r.body)["error"]
        assert isinstance(err["message"], str) and err["message"]
    else:
        assert r.status_code == status, (r.status_code, r.text[:300])
        err = assert_error_shape(r)
    assert err["code"] == code, err
    return str(err["message"])


def _still_serving(http: httpx.Client) -> None:
    r = http.post(DATA, json={"data": {"ok": 1}})
    assert r.status_code == 200 and r.json()["data"]["seen"] is True, r.text


def _head(method: str, path: str, headers: dict[str, str]) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.parametrize("path", [DATA, ADMIN])
def test_declared_oversized_body_is_413_before_reading_it(fuzz_stack: FuzzStack, path: str) -> None:
    size = 200 * 1024 * 1024  # declared only: the server must answer without waiting for it
    head = _head("POST", path, {**JSON, "content-length": str(size)})
    answer = raw_exchange(fuzz_stack.gateway_url, head, timeout=10)
    message = _error(answer, 413, "PAYLOAD_TOO_LARGE")
    assert str(size) in message
    assert answer.seconds < 5


@pytest.mark.parametrize("path", [DATA, ADMIN])
def test_streamed_50mb_body_is_refused_early_with_bounded_memory(
    fuzz_stack: FuzzStack, http: httpx.Client, path: str
) -> None:
    chunk = 64 * 1024
    total = 50 * 1024 * 1024
    frame = b"%x\r\n" % chunk + b" " * chunk + b"\r\n"
    before = rss_bytes(fuzz_stack.gateway_pid)
    answer = stream_until_answered(
        fuzz_stack.gateway_url,
        _head("POST", path, {**JSON, "transfer-encoding": "chunked"}),
        iter([frame] * (total // chunk)),
        timeout=60,
    )
    grown = rss_bytes(fuzz_stack.gateway_pid) - before
    _error(answer, 413, "PAYLOAD_TOO_LARGE")
    # Answered while the client was still sending: the limit plus socket buffers went out, not 50 MB.
    assert answer.sent < 10 * 1024 * 1024, answer.sent
    assert grown < 16 * 1024 * 1024, f"gateway RSS grew by {grown / 2**20:.1f} MiB"
    _still_serving(http)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        (DATA, b"[" * 100_000),
        (DATA, b'{"a":' * 20_000),
        (DATA, b'{"data":' + b"[" * 300 + b"]" * 300 + b"}"),  # parses (orjson: 1024), cannot re-encode
        (DATA, b'{"data":' + b'{"k":' * 200 + b"1" + b"}" * 200 + b"}"),
        (ADMIN, b"[" * 100_000),
        (ADMIN, b'{"workflow_id":"deep","name":"d","tasks":[],"x":' + b"[" * 300 + b"]" * 300 + b"}"),
    ],
    ids=["data-100k-lists", "data-20k-objects", "data-300-in-data", "data-200-objects", "admin-100k", "admin-300"],
)
def test_deeply_nested_json_is_a_clear_400(http: httpx.Client, path: str, body: bytes) -> None:
    r = http.post(path, content=body, headers=JSON)
    message = _error(r, 400, "BAD_REQUEST")
    assert "JSON" in message
    _still_serving(http)


def test_json_at_the_depth_limit_still_works(http: httpx.Client) -> None:
    nested = b"[" * 120 + b"]" * 120
    r = http.post(DATA, content=b'{"data":' + nested + b"}", headers=JSON)
    assert r.status_code == 200, r.text
    assert r.json()["data"]["req"] is not None


@pytest.mark.parametrize("path", [DATA, ADMIN])
@pytest.mark.parametrize(
    "body",
    [b'{"data": "\xff\xfe"}', b'{"data": "\xed\xa0\x80"}', b"\xef\xbb\xbf\xc3\x28"],
    ids=["ff-fe", "surrogate", "bom-then-invalid"],
)
def test_invalid_utf8_is_400(http: httpx.Client, path: str, body: bytes) -> None:
    r = http.post(path, content=body, headers=JSON)
    assert "JSON" in _error(r, 400, "BAD_REQUEST")


@pytest.mark.parametrize("path", [DATA, ADMIN])
@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/xml", "multipart/form-data; boundary=x", "application/x-www-form-urlencoded"],
)
def test_wrong_content_type_is_415(http: httpx.Client, path: str, content_type: str) -> None:
    r = http.post(path, content=b'{"data": {}}', headers={"content-type": content_type})
    _error(r, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_slow_bodies_get_408_and_the_gateway_keeps_serving(fuzz_stack: FuzzStack, http: httpx.Client) -> None:
    """Slowloris: clients sending 1 byte per 100 ms are cut at the body read timeout."""
    body = b'{"data": {"slow": true}}'.ljust(1000)

    def slow_client(path: str) -> RawAnswer:
        head = _head("POST", path, {**JSON, "content-length": str(len(body))})
        return stream_until_answered(
            fuzz_stack.gateway_url, head, iter([bytes([b]) for b in body]), pause=0.1, timeout=BODY_TIMEOUT + 10
        )

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        slow = [pool.submit(slow_client, p) for p in (DATA, DATA, DATA, DATA, ADMIN, ADMIN)]
        # Meanwhile others are served at normal speed.
        served = 0
        while not all(f.done() for f in slow):
            started = time.monotonic()
            assert http.get("/healthz").status_code == 200
            assert time.monotonic() - started < 1.0
            served += 1
        answers = [f.result() for f in slow]
    assert served >= 3
    for answer in answers:
        # 1 byte / 100 ms: 1000 bytes would take 100 s; the server answers at its body read timeout.
        assert answer.seconds < BODY_TIMEOUT + 5, answer.seconds
        assert answer.sent < len(body)
        _error(answer, 408, "REQUEST_TIMEOUT")
    _still_serving(http)


def _requests_by_status(http: httpx.Client, method: str) -> dict[str, float]:
    """The gateway's `http_requests_total` for `method`, summed over routes, by status."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            if sample.name.endswith("http_requests_total") and sample.labels.get("method") == method:
                status = sample.labels["status"]
                counts[status] = counts.get(status, 0.0) + sample.value
    return counts


@pytest.mark.parametrize(("method", "path"), [("POST", DATA), ("POST", ADMIN), ("PUT", f"{ADMIN}/gone")])
def test_client_that_hangs_up_mid_body_is_no_server_error(
    fuzz_stack: FuzzStack, http: httpx.Client, method: str, path: str
) -> None:
    """A client that closes its connection before its body is complete is nobody's error: recorded as 499
    (client closed request), never an unhandled error or a 500."""
    before = _requests_by_status(http, method)
    host, port = fuzz_stack.gateway_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(_head(method, path, {**JSON, "content-length": "1000"}) + b'{"data": {"par')
    after = poll(
        lambda: (counts := _requests_by_status(http, method)).get("499", 0) > before.get("499", 0) and counts,
        within=30,
        what=f"the hung-up {method} {path} counted as 499",
    )
    assert after.get("500", 0) == before.get("500", 0), (before, after)
    assert "unhandled error" not in fuzz_stack.log("gateway")
    _still_serving(http)


def test_long_url_is_414(fuzz_stack: FuzzStack, http: httpx.Client) -> None:
    for path in ("/api/v1/data/traces/" + "a" * 20_000, "/api/v1/data/traces?q=" + "b" * 60_000):
        r = http.get(path)
        assert "limit" in _error(r, 414, "URI_TOO_LONG")
    # Far beyond: the protocol guard refuses the head while it arrives (431 + close, before any app code).
    huge = raw_exchange(fuzz_stack.gateway_url, _head("GET", "/healthz?x=" + "c" * 500_000, {}))
    assert huge.status == 431 and huge.headers.get("connection") == "close", huge
    _still_serving(http)


@pytest.mark.parametrize(
    "headers",
    [
        {f"x-flood-{i}": "v" * 100 for i in range(2000)},
        {"x-big": "v" * 2_000_000},
    ],
    ids=["2000-headers", "one-2mb-header"],
)
def test_header_flood_is_431_and_never_reaches_kafka(http: httpx.Client, headers: dict[str, str]) -> None:
    # The data API copies headers into the Kafka record: without the limit this became a 1 MB+ record.
    r = http.post(DATA, json={"data": {}}, headers=headers)
    assert "limit" in _error(r, 431, "REQUEST_HEADER_FIELDS_TOO_LARGE")
    _still_serving(http)


def test_garbage_request_line_is_refused_and_the_gateway_keeps_serving(
    fuzz_stack: FuzzStack, http: httpx.Client
) -> None:
    # Refused by the HTTP parser before the app runs: uvicorn's own plain 400 (no app code is involved).
    answer = raw_exchange(fuzz_stack.gateway_url, b"GARBAGE \x00\xff\r\n\r\n")
    assert answer.status in (400, None)
    _still_serving(http)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", ADMIN, b'{"workflow_id": '),
        ("POST", ADMIN, b"not json at all"),
        ("POST", ADMIN, b""),
        ("POST", ADMIN, b"[1, 2, 3]"),
        ("POST", ADMIN, b'"a string"'),
        ("POST", "/api/v1/admin/channels", b"{,}"),
        ("POST", "/api/v1/admin/connectors", b"null"),
        ("PUT", f"{ADMIN}/nope", b"{'single': 'quotes'}"),
        ("PATCH", f"{ADMIN}/nope/status", b'{"status": '),
        ("PATCH", f"{ADMIN}/nope/status", b"[]"),
        ("POST", f"{ADMIN}/import", b'{"not": "a list"}'),
        ("POST", f"{ADMIN}/validate", b"\x00\x01\x02"),
        ("POST", "/api/v1/admin/restore", b"[[[["),
    ],
)
def test_bad_json_on_admin_routes_is_4xx_in_standard_shape(
    http: httpx.Client, method: str, path: str, body: bytes
) -> None:
    r = http.request(method, path, content=body, headers=JSON)
    assert 400 <= r.status_code < 500, (r.status_code, r.text[:300])
    assert_error_shape(r)
