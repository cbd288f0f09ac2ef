"""The data API's hot path (`DataFastPath`) and sticky request partitions (`KafkaBridge.produce_request`).

The fast path must serve exactly the requests FastAPI's router would send to the data endpoints (checked
against the router itself), keep error shapes, request ids and HTTP metrics, and parse queries and
multi-chunk bodies as Starlette does. Sticky partitions are checked on the real broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from confluent_kafka.admin import NewTopic
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.gateway.app import create_app
from app.gateway.data import DataFastPath, any_route, post_channel, post_channel_async
from app.gateway.reply_router import KafkaBridge
from app.kafka.admin import create_admin
from app.settings import Settings
from tests.gateway.conftest import Admin, Gateway, map_task, parse_task

pytestmark = pytest.mark.timeout(180)

_FAST_ENDPOINTS = {post_channel, post_channel_async, any_route}
_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"]
_RESTS = [
    "",
    "orders",
    "Orders",
    "orders/",
    "orders/async",
    "orders/async/",
    "orders/x/async",
    "async",
    "a//async",
    "/async",
    "traces",
    "Traces",
    "traces/",
    "traces/abc",
    "traces/abc/",
    "traces/abc/def",
    "traces/async",
    "x/y/z",
]


async def _router_choice(app: Any, method: str, path: str) -> tuple[Any, str | None]:
    """(endpoint, route template) FastAPI's own router serves `method path` with ((None, None): 404/405)."""
    scope: dict[str, Any] = {
        "type": "http",
        "method": method,
        "path": path,
        "root_path": "",
        "headers": [],
        "query_string": b"",
        "app": app,
    }

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(_message: dict[str, Any]) -> None:
        return None

    try:
        await app.router(scope, receive, send)
    except StarletteHTTPException:
        return None, None  # no route, or the wrong method (405): nothing serves it
    except Exception:
        pass
    route = scope.get("route")
    return scope.get("endpoint"), getattr(route, "path_format", None)


async def test_fast_path_takes_exactly_the_requests_the_router_sends_to_the_data_endpoints() -> None:
    app = create_app(Settings(kafka_bootstrap="127.0.0.1:9"))  # built only: no I/O
    fast = DataFastPath(app, state=State())
    checked = 0
    for method in _METHODS:
        for rest in _RESTS:
            endpoint, template = await _router_choice(app, method, f"/api/v1/data/{rest}")
            chosen = fast.route_for(method, rest)
            where = f"{method} /api/v1/data/{rest}"
            if endpoint in _FAST_ENDPOINTS:
                assert chosen is not None, f"{where}: FastAPI serves it with {endpoint.__name__}"
                assert chosen.endpoint is endpoint, where
                assert chosen.path_format == template, where
            else:
                assert chosen is None, f"{where}: FastAPI answers it with {endpoint!r}"
            checked += 1
    assert checked == len(_METHODS) * len(_RESTS)


ECHO_WF = {
    "workflow_id": "fast-echo-wf",
    "name": "fast-echo",
    "tasks": [
        map_task(
            "echo",
            ("data.query", {"var": "metadata.query"}),
        ),
        parse_task("got"),
    ],
}


@pytest.fixture(scope="module")
async def echo_channel(admin: Admin) -> str:
    await admin.workflow(ECHO_WF)
    await admin.channel(
        {
            "channel_id": "fast-echo",
            "name": "fast-echo",
            "channel_type": "sync",
            "protocol": "http",
            "methods": ["POST"],
            "workflow_id": "fast-echo-wf",
        }
    )
    return "fast-echo"


async def test_query_string_follows_starlette_rules(gateway: Gateway, echo_channel: str) -> None:
    r = await gateway.http.post(
        f"/api/v1/data/{echo_channel}?a=1&a=2&blank=&sp=x%20y&u=%C3%A9",
        json={"data": {"k": 1}},
    )
    assert r.status_code == 200, r.text
    # The last value of a repeated key wins, blanks are kept, values are URL-decoded (UTF-8).
    assert r.json()["data"]["query"] == {"a": "2", "blank": "", "sp": "x y", "u": "é"}


async def test_a_body_sent_in_several_chunks_is_reassembled(gateway: Gateway, echo_channel: str) -> None:
    parts = [b'{"data": {"items": [', b'1, 2, 3], "name": "chunk', b'ed"}}']

    async def body() -> AsyncIterator[bytes]:
        for part in parts:
            yield part

    r = await gateway.http.post(
        f"/api/v1/data/{echo_channel}", content=body(), headers={"content-type": "application/json"}
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["got"] == {"items": [1, 2, 3], "name": "chunked"}


async def test_fast_path_errors_keep_their_shape_request_id_and_metrics(gateway: Gateway) -> None:
    r = await gateway.http.post("/api/v1/data/no-such-channel", json={"data": {}}, headers={"x-request-id": "fast-404"})
    assert r.status_code == 404
    assert r.json() == {"error": {"code": "NOT_FOUND", "message": "No channel matches POST /no-such-channel"}}
    assert r.headers["x-request-id"] == "fast-404"
    assert r.headers["content-type"] == "application/json"
    r = await gateway.http.post(
        "/api/v1/data/no-such-channel", content=b"{nope", headers={"content-type": "text/plain"}
    )
    assert r.status_code == 404  # the route is resolved before the body is looked at (Orion's order)
    metrics = (await gateway.http.get("/metrics")).text
    line = next(
        (
            x
            for x in metrics.splitlines()
            if x.startswith("http_requests_total{") and 'path="/api/v1/data/{channel}"' in x and 'status="404"' in x
        ),
        None,
    )
    assert line is not None, "the fast path must label metrics with the route template"
    assert float(line.rsplit(" ", 1)[1]) >= 2


async def _delivered_partitions(bridge: KafkaBridge, topic: str, n: int) -> list[int]:
    futures = [bridge.produce_request(topic, b"{}", key=f"k-{i}", headers=[("quasar-mode", b"sync")]) for i in range(n)]
    messages = await asyncio.wait_for(asyncio.gather(*futures), 30)
    return [m.partition() for m in messages]


async def test_requests_of_one_window_share_a_partition_and_windows_rotate(e2e_settings: Settings) -> None:
    topic = f"{e2e_settings.topic_prefix}sticky-test"
    admin = create_admin(e2e_settings)  # kept referenced: a collected client fails its futures
    for fut in admin.create_topics([NewTopic(topic, 4, 1)]).values():
        await asyncio.to_thread(fut.result, 30)
    # A 1 s window: the 20 records below are produced back to back, so they share one partition.
    wide = KafkaBridge(e2e_settings, partitions=[0], linger_ms=1000)
    await wide.start()
    try:
        partitions = await _delivered_partitions(wide, topic, 20)
    finally:
        await wide.stop()
    assert len(set(partitions)) == 1, partitions
    # A zero window rotates on every record: round robin over all 4 partitions.
    narrow = KafkaBridge(e2e_settings, partitions=[0], linger_ms=0)
    await narrow.start()
    try:
        partitions = await _delivered_partitions(narrow, topic, 8)
    finally:
        await narrow.stop()
    assert sorted(partitions) == [0, 0, 1, 1, 2, 2, 3, 3], partitions


async def test_an_idle_bridge_stops_fetching_and_the_next_request_resumes_it(
    e2e_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.gateway import reply_router

    monkeypatch.setattr(reply_router, "IDLE_PAUSE_S", 0.2)
    bridge = KafkaBridge(e2e_settings.model_copy(update={"instance_id": "gw-idle"}), partitions=[1], linger_ms=0)
    await bridge.start()
    try:
        for round_ in range(2):  # paused, woken by a request, paused again, woken again
            for _ in range(300):  # the poll thread pauses after IDLE_PAUSE_S without awaited replies
                if bridge.paused:
                    break
                await asyncio.sleep(0.05)
            assert bridge.paused
            correlation_id = f"idle-{round_}"
            reply = bridge.expect(correlation_id)
            # what a worker sends back: keyed by the correlation id, on the caller's reply partition
            await bridge.produce(bridge.topics.replies, b'{"ok": 1}', key=correlation_id.encode(), partition=1)
            answered = await asyncio.wait_for(reply, 30)
            assert (answered.status, answered.body) == (200, b'{"ok": 1}')
            assert not bridge.paused
    finally:
        await bridge.stop()
