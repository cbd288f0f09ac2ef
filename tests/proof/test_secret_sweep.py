"""Issue 14 item 5: no secret leaves Quasar except to where it is used.

Plants a distinct secret in every field shape a user can write (URL userinfo, header values, nested
`secret_key` / `private_key` / `aws_secret_access_key` / `dsn`, a Redis URL password, a SQL connection
string, a channel's API key, an http_call task's inline header), runs traffic that uses them (the worker's
HTTP client calls a URL with credentials, logging at INFO), then greps every admin response (GET, list,
export, versions, backup, audit), every data response, both processes' `/metrics` and log lines, and
every record (value, key, headers) on the audit, traces, replies, DLQ and output topics.

The config topic is the store and keeps secrets by design (use `env://` references to keep them out);
channel request topics carry the caller's own request (credential headers there are another issue's).
Real `quasar worker` + `quasar gateway` processes on the test broker.
"""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import reader_config
from tests.proof._fuzz_support import FUZZ_ENV, FuzzStack, poll, start_fuzz_stack

pytestmark = pytest.mark.timeout(300)

SECRETS = {
    "url_password": "Sx1urlpw9f",
    "bearer_header": "Sx2bearer7q",
    "api_key_header": "Sx3apikey4z",
    "cookie": "Sx4cookie2m",
    "secret_key": "Sx5secretk8",
    "private_key": "Sx6privk3w",
    "aws_secret_access_key": "Sx7aws6d",
    "dsn_password": "Sx8dsn1p",
    "redis_password": "Sx9redis5t",
    "sql_password": "Sx10sqlpw3",
    "channel_api_key": "Sx11chankey",
    "task_header": "Sx12task0y",
    "auth_token": "Sx13authtok",
}


class _Upstream(http.server.BaseHTTPRequestHandler):
    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length") or 0))
        body = b'{"ok": true}'
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture(scope="module")
def upstream() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Upstream)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzStack]:
    env = {**FUZZ_ENV, "QUASAR_LOG_LEVEL": "info"}  # httpx logs every request URL at INFO
    with start_fuzz_stack(kafka_bootstrap, tmp_path_factory.mktemp("sweep"), env) as s:
        yield s


@pytest.fixture(scope="module")
def planted(stack: FuzzStack, upstream: int) -> dict[str, Any]:
    s = SECRETS
    stack.admin("POST", "/connectors", {
        "id": "sweep-http", "name": "sweep-http", "connector_type": "http",
        "config": {
            "type": "http",
            "url": f"http://sweeper:{s['url_password']}@127.0.0.1:{upstream}/base",
            "allow_private_urls": True,
            "retry": {"max_retries": 0, "retry_delay_ms": 10},
            "headers": {"Authorization": f"Bearer {s['bearer_header']}", "X-API-Key": s["api_key_header"],
                        "Cookie": f"sid={s['cookie']}"},
            "auth": {"type": "bearer", "token": s["auth_token"]},
            "vault": {"secret_key": s["secret_key"], "private_key": s["private_key"],
                      "aws_secret_access_key": s["aws_secret_access_key"],
                      "dsn": f"postgres://app:{s['dsn_password']}@db.internal/app"},
        },
    })  # fmt: skip
    stack.admin("POST", "/connectors", {
        "id": "sweep-cache", "name": "sweep-cache", "connector_type": "cache",
        "config": {"type": "cache", "backend": "redis", "url": f"redis://:{s['redis_password']}@127.0.0.1:6379/15"},
    })  # fmt: skip
    stack.admin("POST", "/connectors", {
        "id": "sweep-db", "name": "sweep-db", "connector_type": "db",
        "config": {"type": "db", "driver": "postgres",
                   "connection_string": f"postgresql://quasar:{s['sql_password']}@127.0.0.1:5432/quasar"},
    })  # fmt: skip
    workflow = {
        "name": "sweep",
        "condition": True,
        "tasks": [
            {"id": "call", "name": "call", "function": {"name": "http_call", "input": {
                "connector": "sweep-http", "method": "POST", "path": "/echo", "body": {"x": 1},
                "headers": {"X-Task-Token": s["task_header"]}, "response_path": "data.upstream"}}},
        ],
    }  # fmt: skip
    stack.activate("sweep", workflow, channel_type="sync", config={"api_keys": [s["channel_api_key"]]})
    return {"headers": {"X-API-Key": s["channel_api_key"]}}


def _leaks(text: str) -> list[str]:
    return [name for name, secret in SECRETS.items() if secret in text]


def _topic_text(stack: FuzzStack, topic: str) -> str:
    parts = topic_partitions(create_admin(stack.settings)).get(topic, 0)
    if not parts:
        return ""
    consumer = Consumer(reader_config(stack.settings))
    out: list[str] = []
    try:
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(parts)])
        idle = 0
        while idle < 3:  # a few empty polls in a row: the end of what is there
            batch = consumer.consume(500, 1.0)
            idle = 0 if batch else idle + 1
            for msg in batch:
                if msg.error() is not None:
                    continue
                out.append(repr((msg.key(), msg.value(), msg.headers())))
    finally:
        consumer.close()
    return "\n".join(out)


def test_no_planted_secret_appears_in_any_output(stack: FuzzStack, planted: dict[str, Any]) -> None:
    base = stack.gateway_url
    seen: dict[str, str] = {}

    # Traffic that uses the secrets: the worker calls the upstream through the connector.
    def answered() -> httpx.Response | None:
        r = httpx.post(f"{base}/api/v1/data/sweep", json={"data": {"n": 1}}, headers=planted["headers"], timeout=15)
        return r if r.status_code == 200 else None

    reply = poll(answered, within=60, what="the sweep channel answers")
    seen["data reply"] = reply.text
    seen["data 401"] = httpx.post(f"{base}/api/v1/data/sweep", json={"data": {}}, timeout=15).text

    for path in (
        "/connectors", "/connectors/sweep-http", "/connectors/sweep-cache", "/connectors/sweep-db",
        "/connectors/export", "/workflows/sweep/versions", "/channels", "/channels/sweep",
        "/channels/export", "/workflows/sweep", "/workflows/export", "/backup", "/audit-logs",
    ):  # fmt: skip
        r = httpx.get(f"{base}/api/v1/admin{path}", timeout=30)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
        seen[f"GET {path}"] = r.text
    seen["gateway /metrics"] = httpx.get(f"{base}/metrics", timeout=10).text
    seen["worker /metrics"] = httpx.get(f"{stack.worker_url}/metrics", timeout=10).text
    names = stack.names
    for topic in (names.audit, names.traces, names.replies, names.dlq):
        seen[f"topic {topic}"] = _topic_text(stack, topic)
    stack.alive()
    seen["gateway log"] = stack.log("gateway")
    seen["worker log"] = stack.log("worker")

    # The sweep must have looked at real output: the call happened and was logged by the HTTP client.
    assert json.loads(reply.text)["data"]["upstream"] == {"ok": True}
    assert "127.0.0.1" in seen["worker log"] and "HTTP Request" in seen["worker log"]
    leaks = {where: found for where, text in seen.items() if (found := _leaks(text))}
    assert leaks == {}, leaks
