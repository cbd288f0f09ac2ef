"""Unit-level specs of app/observability: HTTP metrics labels, log context, JSON logs, the workflow
observer on a real engine run, consumer lag on the real broker, and the worker's ops server."""

from __future__ import annotations

import io
import json
import logging
import time
import uuid
from typing import Any

import httpx
import pytest
from confluent_kafka import Consumer, Producer
from prometheus_client import REGISTRY
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from app.engine import ChannelWorkflow, Engine, Message, compile_workflow
from app.engine.message import AuditEntry
from app.kafka import headers as H
from app.kafka.broker import free_port
from app.kafka.producer import produce_sync
from app.observability import context
from app.observability.http import HttpMetricsMiddleware
from app.observability.logs import configure_logging
from app.observability.metrics import LAG, WorkflowObserver, _RunStats, consumer_lag
from app.observability.server import start_ops_server
from tests.fixtures.kafka import TopicFactory
from tests.fixtures.polling import poll


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _boom(_request: Any) -> PlainTextResponse:
    raise RuntimeError("boom")


async def _item(request: Any) -> PlainTextResponse:
    return PlainTextResponse(request.path_params["item_id"])


async def test_http_metrics_label_by_route_template_never_raw_path() -> None:
    tag = uuid.uuid4().hex[:6]
    app = Starlette(routes=[Route(f"/{tag}/items/{{item_id}}", _item), Route(f"/{tag}/boom", _boom)])
    wrapped = HttpMetricsMiddleware(app)
    transport = httpx.ASGITransport(app=wrapped, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        for i in range(3):
            assert (await client.get(f"/{tag}/items/{i}")).text == str(i)
        assert (await client.get(f"/{tag}/nowhere")).status_code == 404
        assert (await client.get(f"/{tag}/boom")).status_code == 500
    template = f"/{tag}/items/{{item_id}}"
    assert _sample("http_requests_total", method="GET", path=template, status="200") == 3
    assert _sample("http_request_duration_seconds_count", method="GET", path=template, status="200") == 3
    assert _sample("http_requests_total", method="GET", path=f"/{tag}/boom", status="500") == 1
    assert _sample("http_requests_total", method="GET", path=f"/{tag}/items/1", status="200") == 0
    assert _sample("http_requests_total", method="GET", path="unmatched", status="404") >= 1


def test_traceparent_parsing_accepts_w3c_and_rejects_garbage() -> None:
    good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert context.parse_traceparent(good) == "4bf92f3577b34da6a3ce929d0e0e4736"
    for bad in (
        None,
        "",
        "00-xyz",
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        good + "-extra",
    ):
        assert context.parse_traceparent(bad) is None, bad
    hm = {H.REQUEST_ID: "r1", H.CHANNEL: "orders", H.TRACEPARENT: good, H.TRACE_ID: "other"}
    assert context.context_from_headers(hm) == {
        "request_id": "r1",
        "channel": "orders",
        "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
    }
    assert context.context_from_headers({H.TRACE_ID: "t-1"}) == {"trace_id": "t-1"}


def test_bound_context_is_restored_after_the_block() -> None:
    context.clear()
    context.bind(request_id="outer")
    with context.bound(request_id="inner", channel="c", workflow=None):
        assert context.current() == {"request_id": "inner", "channel": "c"}
    assert context.current() == {"request_id": "outer"}
    context.clear()


def test_json_logs_carry_the_bound_context_for_stdlib_loggers() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    try:
        configure_logging("debug", "json", stream=stream)
        with context.bound(request_id="req-42", channel="orders", trace_id="abc"):
            logging.getLogger("quasar.test").warning("hello %s", "world", extra={"offset": 7})
        line = json.loads(stream.getvalue().strip().splitlines()[-1])
        assert line["event"] == "hello world" and line["level"] == "warning"
        assert line["logger"] == "quasar.test" and line["offset"] == 7
        assert (line["request_id"], line["channel"], line["trace_id"]) == ("req-42", "orders", "abc")
        assert line["timestamp"].endswith("Z")
    finally:
        for handler in [h for h in root.handlers if h.get_name() == "quasar"]:
            root.removeHandler(handler)
        root.setLevel(saved[1])


@pytest.mark.parametrize(("level", "fmt", "message"), [("loud", "json", "log level"), ("info", "xml", "log format")])
def test_bad_logging_settings_are_clear_errors(level: str, fmt: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        configure_logging(level, fmt, stream=io.StringIO())


async def test_workflow_observer_counts_each_workflow_and_task_of_a_real_run() -> None:
    wid = f"wf-{uuid.uuid4().hex[:6]}"
    wf = compile_workflow(
        {
            "workflow_id": wid,
            "name": wid,
            "tasks": [
                {
                    "id": "parse",
                    "name": "p",
                    "function": {"name": "parse_json", "input": {"source": "payload", "target": "o"}},
                },
                {
                    "id": "skip",
                    "name": "s",
                    "condition": False,
                    "function": {"name": "map", "input": {"mappings": [{"path": "data.x", "logic": 1}]}},
                },
                {
                    "id": "mark",
                    "name": "m",
                    "function": {"name": "map", "input": {"mappings": [{"path": "data.y", "logic": 2}]}},
                },
            ],
        }
    )
    engine = Engine({"ch": [ChannelWorkflow(wf, rollout=(0, 100))]})
    observer = WorkflowObserver()
    for i in range(4):
        message = Message.from_request({"i": i}, {})
        started = time.time()
        await engine.process("ch", message)
        observer.observe("ch", message.audit_trail, started)
    assert _sample("quasar_workflow_runs_total", channel="ch", workflow=wid) == 4
    assert _sample("quasar_workflow_duration_seconds_count", channel="ch", workflow=wid) == 4
    assert _sample("quasar_task_runs_total", workflow=wid, task="parse", status="200") == 4
    assert _sample("quasar_task_runs_total", workflow=wid, task="mark", status="200") == 4
    assert _sample("quasar_task_duration_seconds_count", workflow=wid, task="skip") == 0
    assert _sample("quasar_task_duration_seconds_sum", workflow=wid, task="mark") >= 0
    observer.observe("ch", [], time.time())  # nothing ran: nothing counted
    assert _sample("quasar_workflow_runs_total", channel="ch", workflow=wid) == 4


def test_a_batch_of_runs_observed_together_counts_exactly_as_one_by_one() -> None:
    """The worker observes a batch's runs after the batch (`observe_runs`): channels, workflows and slow tasks
    interleaved the same rows as observing each run as it finished."""
    t = 1_000.0

    def entry(wf: str, task: str, status: int, at: float) -> AuditEntry:
        return AuditEntry(wf, task, status, t + at, [])

    runs = [
        ("a", [entry("w1", "x", 200, 0.00001), entry("w1", "y", 500, 0.0004)], t, 0.0005),
        ("b", [entry("w2", "x", 200, 0.3), entry("w3", "z", 200, 0.30002)], t, None),  # two workflows, one slow
        ("a", [], t, 0.00002),  # nothing ran: only the message duration
        ("a", [entry("w1", "x", 200, -0.001)], t, 0.001),  # the wall clock stepped back: first bucket, no sum
        ("b", [entry("w2", "x", 200, 2.5)], t, 2.6),
    ]
    together, one_by_one = _RunStats(), _RunStats()
    WorkflowObserver(together).observe_runs(runs)
    single = WorkflowObserver(one_by_one)
    for channel, trail, started, duration in runs:
        single.observe(channel, trail, started, duration)
    for name in ("task_rows", "workflow_hist", "message_hist"):
        assert getattr(together, name) == getattr(one_by_one, name), name
    assert together.task_rows[("w1", "x", 200)][0] == 2 and together.task_rows[("w2", "x", 200)][-1] == pytest.approx(
        2.8
    )
    assert set(together.workflow_hist) == {("a", "w1"), ("b", "w2"), ("b", "w3")}
    assert sum(together.message_hist[("a",)][:-1]) == 3 and ("b",) in together.message_hist


def test_message_duration_is_exported_per_channel_from_the_observer() -> None:
    """`message_duration_seconds` (Orion's name) comes from the lock-free stats, with Orion's label."""
    channel = f"dur-{uuid.uuid4().hex[:6]}"
    observer = WorkflowObserver()
    observer.observe(channel, [], time.time(), 0.002)
    observer.observe(channel, [], time.time(), 0.004)
    observer.observe(channel, [], time.time())  # no duration measured: not counted
    assert _sample("message_duration_seconds_count", channel=channel) == 2
    assert _sample("message_duration_seconds_sum", channel=channel) == pytest.approx(0.006)
    assert _sample("message_duration_seconds_bucket", channel=channel, le="0.001") == 0
    assert _sample("message_duration_seconds_bucket", channel=channel, le="+Inf") == 2


def test_consumer_lag_is_watermark_minus_position_on_the_real_broker(
    kafka_bootstrap: str, topic_factory: TopicFactory
) -> None:
    topic = topic_factory()
    producer = Producer({"bootstrap.servers": kafka_bootstrap})
    # One record per produce call: one record per batch keeps Tansu's high watermark exact.
    for i in range(5):
        produce_sync(producer, topic, f"v{i}".encode(), None, partition=0)
    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"lag-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "session.timeout.ms": 6000,
        }
    )
    untrack = LAG.track("lag-test", lambda: consumer)
    try:
        from confluent_kafka import TopicPartition

        assert consumer_lag(consumer) == {}  # nothing assigned yet
        consumer.assign([TopicPartition(topic, 0, 0)])
        got = []
        deadline = time.monotonic() + 15
        while len(got) < 2 and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append(msg.value())
        assert got == [b"v0", b"v1"]
        assert consumer_lag(consumer) == {(topic, 0): 3}
        sample = REGISTRY.get_sample_value(
            "quasar_consumer_lag_records", {"group": "lag-test", "topic": topic, "partition": "0"}
        )
        assert sample == 3
    finally:
        untrack()
        consumer.close()
    assert consumer_lag(consumer) == {}  # closed: reported as nothing, not an error
    assert (
        REGISTRY.get_sample_value(
            "quasar_consumer_lag_records", {"group": "lag-test", "topic": topic, "partition": "0"}
        )
        is None
    )


def test_ops_server_reports_degraded_components_with_503() -> None:
    parts = {"broker": "ok", "config": "not_ready", "engine": "ok", "redis": "unreachable (ConnectionError)"}
    port = free_port()
    server = start_ops_server(port, "127.0.0.1", health=lambda: dict(parts), info=lambda: {"instance": "w1"})
    assert server is not None and server.port == port
    try:
        base = f"http://127.0.0.1:{port}"
        health = httpx.get(f"{base}/health")
        assert health.status_code == 503
        assert health.json() == {"status": "degraded", "instance": "w1", "components": parts}
        assert httpx.get(f"{base}/readyz").status_code == 503
        parts["config"] = "ok"
        ready = httpx.get(f"{base}/readyz")  # Redis down degrades health, not readiness
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert httpx.get(f"{base}/health").status_code == 503
        metrics = httpx.get(f"{base}/metrics")
        assert metrics.status_code == 200 and "# TYPE messages_total counter" in metrics.text
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    finally:
        server.close()
    assert start_ops_server(0) is None


def test_a_failing_health_check_is_reported_not_raised() -> None:
    def broken() -> dict[str, str]:
        raise RuntimeError("reader gone")

    port = free_port()
    server = start_ops_server(port, "127.0.0.1", health=broken)
    assert server is not None
    try:
        r = httpx.get(f"http://127.0.0.1:{port}/health")
        assert r.status_code == 503 and "reader gone" in r.json()["components"]["health_check"]
    finally:
        server.close()


def test_ops_server_binds_loopback_by_default_and_bounds_idle_connections() -> None:
    """Issue 14 item 13: no auth on this port, so loopback by default, idle sockets dropped, threads bounded."""
    import socket
    import threading

    port = free_port()
    server = start_ops_server(port, health=lambda: {"broker": "ok"}, max_threads=4, idle_timeout=0.5)
    assert server is not None
    idle: list[socket.socket] = []
    try:
        assert server._server.server_address[0] == "127.0.0.1"
        before = threading.active_count()
        for _ in range(30):  # connect and send nothing, like a held scraper connection
            idle.append(socket.create_connection(("127.0.0.1", port), timeout=5))
        # Never more than max_threads handler threads, however many connections are held.
        assert threading.active_count() - before <= 4
        # The idle ones are closed by the server (recv returns EOF) instead of holding a thread forever.
        for sock in idle:
            assert sock.recv(1) == b""
        ok = poll(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200,
            within=10,
            what="ops server answers after idle connections",
        )
        assert ok
    finally:
        for sock in idle:
            sock.close()
        server.close()
