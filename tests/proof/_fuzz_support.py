"""Helpers for the bad-input proofs: a real stack (`quasar worker` + `quasar gateway` processes on the
test broker), raw Kafka produce/read helpers and the standard error-shape check.

The gateway runs as the production command (uvicorn + httptools + uvloop) in its own process, so the
HTTP abuse tests hit the real server stack and can read its RSS from /proc without measuring pytest.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from app.kafka.admin import create_admin
from app.kafka.broker import free_port
from app.kafka.config import producer_config, reader_config
from app.kafka.names import TopicNames
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings
from tests.fixtures.kafka import make_test_settings
from tests.fixtures.polling import poll

__all__ = [
    "AVRO_CHANNEL",
    "ECHO",
    "FUZZ_ENV",
    "JSON_CHANNEL",
    "SYNC_CHANNEL",
    "FuzzStack",
    "RawAnswer",
    "assert_error_shape",
    "poll",
    "raw_exchange",
    "read_until",
    "rss_bytes",
    "start_fuzz_stack",
    "stream_until_answered",
]

# A tiny sync workflow: parse the payload and stamp it, so a valid request gets a real 200 from a worker.
ECHO: dict[str, Any] = {
    "name": "echo",
    "condition": True,
    "tasks": [
        {
            "id": "parse",
            "name": "parse",
            "function": {"name": "parse_json", "input": {"source": "payload", "target": "req"}},
        },
        {
            "id": "stamp",
            "name": "stamp",
            "function": {"name": "map", "input": {"mappings": [{"path": "data.seen", "logic": True}]}},
        },
    ],
}


# Small limits so the abuse cases stay cheap; the body read timeout is short for the slowloris case.
FUZZ_ENV: dict[str, str] = {
    "QUASAR_MAX_RECORD_BYTES": "1000000",  # a budget at librdkafka's default message.max.bytes
    "QUASAR_MAX_PAYLOAD_SIZE": str(128 * 1024),
    "QUASAR_MAX_ADMIN_BODY_SIZE": str(1024 * 1024),
    "QUASAR_WORKER_MAX_RECORD_BYTES": str(256 * 1024),
    "QUASAR_MAX_RESULT_SIZE_BYTES": str(192 * 1024),
    "QUASAR_BODY_READ_TIMEOUT_MS": "1500",
    "QUASAR_PROCESSING_TIMEOUT_MS": "10000",
    "QUASAR_WORKER_RETRY_BACKOFF_MS": "20",
}
SYNC_CHANNEL = "echo"  # sync, HTTP
JSON_CHANNEL = "fz-json"  # async, JSON, with an output topic
AVRO_CHANNEL = "fz-avro"  # async, Avro (schemas/order.avsc), with an output topic


def assert_error_shape(response: httpx.Response) -> dict[str, Any]:
    """The gateway's one error shape: JSON `{"error": {"code": str, "message": str}}`; returns `error`."""
    assert response.headers.get("content-type", "").startswith("application/json"), (
        response.status_code,
        response.headers.get("content-type"),
        response.text[:300],
    )
    body = response.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), dict), response.text[:300]
    err = body["error"]
    assert isinstance(err.get("code"), str) and err["code"], err
    assert isinstance(err.get("message"), str) and err["message"], err
    return err  # type: ignore[no-any-return]


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


@dataclass
class FuzzStack:
    """A running worker + gateway on one topic prefix, with a producer for raw records."""

    settings: Settings
    gateway_url: str
    worker_url: str
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]]
    producer: Producer

    @property
    def names(self) -> TopicNames:
        return TopicNames(self.settings.topic_prefix)

    @property
    def gateway_pid(self) -> int:
        return self.procs["gateway"].pid

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}: {self.log(name)[-3000:]}")

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def admin(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        r = httpx.request(method, f"{self.gateway_url}/api/v1/admin{path}", json=body, timeout=30)
        assert r.status_code < 300, (path, r.status_code, r.text)
        return r.json() if r.content else {}

    def activate(
        self, channel: str, workflow: Mapping[str, Any], *, channel_type: str, config: Mapping[str, Any]
    ) -> None:
        """Create + activate a workflow and a channel of the same name through the admin API."""
        self.admin("POST", "/workflows", {"workflow_id": channel, **workflow})
        self.admin("PATCH", f"/workflows/{channel}/status", {"status": "active"})
        doc = {
            "channel_id": channel,
            "name": channel,
            "channel_type": channel_type,
            "protocol": "kafka" if channel_type == "async" else "http",
            "workflow_id": channel,
            "config": dict(config),
        }
        self.admin("POST", "/channels", doc)
        self.admin("PATCH", f"/channels/{channel}/status", {"status": "active"})

    def produce(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None,
        headers: list[tuple[str, bytes | None]] | None = None,
    ) -> tuple[int, int]:
        """Produce one raw record; returns its (partition, offset) once the broker acked it."""
        result: list[Any] = []
        self.producer.produce(
            topic, value=value, key=key, headers=headers, on_delivery=lambda e, m: result.append((e, m))
        )
        self.producer.flush(15)
        assert result, f"no delivery report for a record on {topic}"
        err, msg = result[0]
        assert err is None, f"produce to {topic} failed: {err}"
        return msg.partition(), msg.offset()


def _env(settings: Settings, instance: str, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUASAR_")}
    env.update(
        {
            "QUASAR_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
            "QUASAR_TOPIC_PREFIX": settings.topic_prefix,
            "QUASAR_FETCH_WAIT_MAX_MS": str(settings.fetch_wait_max_ms),
            "QUASAR_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
            "QUASAR_DEFAULT_PARTITIONS": str(settings.default_partitions),
            "QUASAR_INSTANCE_ID": instance,
            "QUASAR_LOG_FORMAT": "json",
            "QUASAR_LOG_LEVEL": "warning",
            **extra,
        }
    )
    return env


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def start_fuzz_stack(bootstrap: str, tmp: Path, env: Mapping[str, str]) -> Iterator[FuzzStack]:
    """Start `quasar worker` and `quasar gateway` (extra `QUASAR_*` env) and wait until both are ready."""
    settings = make_test_settings(bootstrap, instance_id="fuzz-gw")
    apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings))
    gw_port, worker_port = free_port(), free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    # Allowed to send records bigger than librdkafka's default limit (1,000,000): real Kafka brokers
    # accept 1,048,588 bytes by default, so such records can reach a channel topic.
    producer = Producer(
        producer_config(settings, client_id="fuzz-corpus", **{"linger.ms": 0, "message.max.bytes": 4_000_000})
    )

    def spawn(name: str, args: list[str], instance: str) -> None:
        with (tmp / f"{name}.log").open("wb") as out:
            procs[name] = subprocess.Popen(
                [sys.executable, "-m", "app.cli", *args],
                env=_env(settings, instance, env),
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    try:
        spawn("worker", ["worker", "--metrics-port", str(worker_port)], "fuzz-worker")
        spawn("gateway", ["gateway", "--host", "127.0.0.1", "--port", str(gw_port)], "fuzz-gw")
        stack = FuzzStack(
            settings, f"http://127.0.0.1:{gw_port}", f"http://127.0.0.1:{worker_port}", tmp, procs, producer
        )

        def ready(url: str) -> bool:
            stack.alive()
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

        poll(lambda: ready(stack.gateway_url), within=60, what="gateway ready", every=0.1)
        poll(lambda: ready(stack.worker_url), within=60, what="worker ready", every=0.1)
        stack.activate(SYNC_CHANNEL, ECHO, channel_type="sync", config={})
        # The JSON corpus is about the {"data", "metadata"} envelope (a raw channel takes any JSON value).
        stack.activate(JSON_CHANNEL, ECHO, channel_type="async", config={"output": True, "envelope": "quasar"})
        avro = {"output": True, "avro_schema": "order"}
        stack.activate(AVRO_CHANNEL, ECHO, channel_type="async", config=avro)
        yield stack
    finally:
        for proc in procs.values():
            _stop(proc)
        producer.flush(5)


def read_until(
    settings: Settings,
    topic: str,
    until: Callable[[list[Message]], bool],
    *,
    timeout: float = 30.0,
) -> list[Message]:
    """Read every partition of `topic` from the beginning until `until(records)` holds (bounded)."""
    parts = None
    deadline = time.monotonic() + timeout
    admin = create_admin(settings)
    while parts is None:
        md = admin.list_topics(topic, timeout=5).topics.get(topic)
        if md is not None and md.error is None and md.partitions:
            parts = sorted(md.partitions)
        elif time.monotonic() > deadline:
            raise AssertionError(f"topic {topic} does not exist after {timeout}s")
        else:
            time.sleep(0.05)  # topic metadata: nothing to wait on
    consumer = Consumer(reader_config(settings, client_id=f"fuzz-read-{uuid.uuid4().hex[:6]}"))
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out: list[Message] = []
    try:
        while not until(out):
            if time.monotonic() > deadline:
                raise AssertionError(f"condition not met on {topic} within {timeout}s; read {len(out)}")
            for msg in consumer.consume(500, 0.2):
                if msg.error() is None:
                    out.append(msg)
    finally:
        consumer.close()
    return out


def json_value(msg: Message) -> Any:
    return orjson.loads(msg.value() or b"null")


@dataclass
class RawAnswer:
    """What a raw-socket client saw: status (None: closed without answer), headers, body, bytes sent."""

    status: int | None
    headers: dict[str, str]
    body: bytes
    sent: int
    seconds: float


def _parse_answer(data: bytes, sent: int, seconds: float) -> RawAnswer:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    if not lines[0].startswith("HTTP/"):
        return RawAnswer(None, {}, data, sent, seconds)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", len(body)))
    return RawAnswer(int(lines[0].split()[1]), headers, body[:length], sent, seconds)


def _read_answer(sock: socket.socket, deadline: float) -> bytes:
    data = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            break
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if sep:
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length" and len(body) >= int(value):
                    return data
    return data


def raw_exchange(url: str, head: bytes, *, timeout: float = 10.0) -> RawAnswer:
    """Send `head` (request line + headers + body, as bytes) on a fresh connection and read the answer."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        data = _read_answer(sock, started + timeout)
    return _parse_answer(data, len(head), time.monotonic() - started)


def stream_until_answered(
    url: str,
    head: bytes,
    chunks: Iterator[bytes],
    *,
    pause: float = 0.0,
    timeout: float = 30.0,
) -> RawAnswer:
    """Send `head`, then `chunks` one by one (sleeping `pause` between them: a slow client), stopping
    as soon as the server answers or closes; returns the answer and how many body bytes went out."""
    host, port = url.removeprefix("http://").split(":")
    started = time.monotonic()
    deadline = started + timeout
    sent = 0
    with socket.create_connection((host, int(port)), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in chunks:
            if time.monotonic() > deadline:
                break
            readable, _, _ = select.select([sock], [], [], pause)
            if readable:
                break  # the server answered (or closed) before the body was complete
            try:
                sock.sendall(chunk)
            except OSError:
                break  # closed on us mid-body: the answer (if any) is in the receive buffer
            sent += len(chunk)
        data = _read_answer(sock, time.monotonic() + 5)
    return _parse_answer(data, sent, time.monotonic() - started)
