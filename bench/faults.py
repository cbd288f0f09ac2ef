"""Fault scenarios: `python -m bench.faults` (the long runs of `make proof`), also driven by tests/proof.

Each scenario starts real processes on loopback (`python -m app.cli worker|gateway`, Tansu, redis-server,
an aiohttp upstream), injects one fault, accounts for every request and returns a JSON-ready dict.
tests/proof/test_faults_*.py run them with small counts and assert; this module's `main` runs them at
full scale (100,000 messages for the worker kill) and writes bench/results/faults.json + faults.md.

Scenarios:
- kill_worker: kill -9 one of two workers (same group) mid-stream on an async channel with output;
  every request id ends in an output or a DLQ record (duplicates counted), 0 lost.
- gateway_restart: kill -9 + restart the gateway under sync load; failures are 5xx/transport errors,
  bounded by the client timeout, and the service resumes.
- broker_unreachable: worker and gateway started before the broker exists: one clear line per retry,
  no traceback, no exit; they come up once the broker (and its topics) appear.
- admin_conflicts: 100 concurrent read-modify-write admin updates through two gateways and a direct
  ConfigWriter: every acknowledged write is in the final state, every rejected one got 409, every
  reader ends with the same state fingerprint.
- redis_restart: a separate redis-server stopped and restarted under load on a channel with rate limit
  and dedup: no 5xx while it is down (fail-open), dedup works again after it is back.
- upstream_restart: the HTTP server behind an http_call connector stopped and restarted under load:
  errors while down, successes after.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson

__all__ = [
    "Proc",
    "RedisServer",
    "admin_conflicts",
    "broker_unreachable",
    "gateway_restart",
    "kill_worker",
    "main",
    "quasar_env",
    "redis_restart",
    "spawn_gateway",
    "spawn_worker",
    "upstream_restart",
    "wait_until",
]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


# -- processes -------------------------------------------------------------------------------------


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.05) -> Any:
    """Re-run `check` until truthy; raise TimeoutError naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout:.0f}s")
        # Another process is changing state; there is no event to wait on across processes.
        time.sleep(interval)


@dataclass
class Proc:
    """A child process with its output in a log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def alive(self) -> bool:
        return self.popen.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, n: int = 3000) -> str:
        return f"--- {self.name} ({self.log}) ---\n{self.text()[-n:]}"

    def kill9(self) -> None:
        if self.alive:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(10)

    def stop(self, timeout: float = 15.0) -> None:
        if not self.alive:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)


def spawn(name: str, args: list[str], env: dict[str, str], log_dir: Path) -> Proc:
    log = log_dir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            args, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=ROOT
        )
    return Proc(name, popen, log)


def quasar_env(settings: Any, **extra: str) -> dict[str, str]:
    """The environment of a `quasar` child process for `settings` (inherited QUASAR_* dropped)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUASAR_")}
    for name in (
        "kafka_bootstrap",
        "topic_prefix",
        "fetch_wait_max_ms",
        "session_timeout_ms",
        "default_partitions",
        "processing_timeout_ms",
        "redis_url",
        "worker_commit_interval_ms",
        "worker_max_uncommitted_records",
        "processing_guarantee",
    ):
        value = getattr(settings, name)
        if value is not None:
            env[f"QUASAR_{name.upper()}"] = str(value)
    env["QUASAR_LOG_LEVEL"] = "warning"
    env.update(extra)
    return env


def _free_port() -> int:
    from app.kafka.broker import free_port

    return free_port()


def spawn_worker(settings: Any, instance_id: str, log_dir: Path) -> tuple[Proc, int]:
    """`python -m app.cli worker`; returns the process and its ops port (/readyz, /metrics)."""
    port = _free_port()
    args = [
        sys.executable,
        "-m",
        "app.cli",
        "worker",
        "--instance-id",
        instance_id,
        "--metrics-port",
        str(port),
    ]
    return spawn(f"worker-{instance_id}", args, quasar_env(settings), log_dir), port


def spawn_gateway(settings: Any, instance_id: str, log_dir: Path, port: int | None = None) -> tuple[Proc, str]:
    """`python -m app.cli gateway`; returns the process and its base URL."""
    port = port or _free_port()
    args = [sys.executable, "-m", "app.cli", "gateway", "--port", str(port), "--instance-id", instance_id]
    return spawn(f"gateway-{instance_id}", args, quasar_env(settings), log_dir), f"http://127.0.0.1:{port}"


def http_ready(url: str) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1.0).status_code == 200
    return False


def wait_ready(url: str, proc: Proc, timeout: float = 60.0) -> None:
    """Wait for `url` to answer 200 while `proc` lives."""

    def check() -> bool:
        if not proc.alive:
            raise RuntimeError(f"{proc.name} exited (code {proc.popen.returncode})\n{proc.tail()}")
        return http_ready(url)

    try:
        wait_until(check, timeout, f"{proc.name} ready at {url}", interval=0.1)
    except TimeoutError as exc:
        raise TimeoutError(f"{exc}\n{proc.tail()}") from None


class RedisServer:
    """A private redis-server on its own loopback port (never the shared one on 6379)."""

    def __init__(self, log_dir: Path, port: int | None = None) -> None:
        self.port = port or _free_port()
        self.log_dir = log_dir
        self.proc: Proc | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server") or "redis-server"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = spawn(f"redis-{self.port}", args, dict(os.environ), self.log_dir)
        wait_until(self.ping, 10, f"redis-server on {self.port}")

    def ping(self) -> bool:
        import redis

        client = redis.Redis(port=self.port, socket_connect_timeout=0.3, socket_timeout=0.5)
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False
        finally:
            client.close()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill9()  # an outage, not a shutdown
            self.proc = None


def _settings(bootstrap: str, **overrides: Any) -> Any:
    from app.settings import Settings

    values: dict[str, Any] = {
        "kafka_bootstrap": bootstrap,
        "topic_prefix": f"fault{uuid.uuid4().hex[:8]}.",
        "fetch_wait_max_ms": 10,
        "session_timeout_ms": 2000,
        "default_partitions": 4,
        "instance_id": "bench-faults",
    }
    values.update(overrides)
    return Settings(**values)


def _apply_topics(settings: Any, channels: tuple[str, ...] = (), outputs: tuple[str, ...] = ()) -> None:
    from app.kafka.admin import create_admin
    from app.kafka.topics import (
        apply_topics,
        channel_topic_plan,
        fixed_topic_plans,
        load_specs,
        output_topic_plan,
    )

    specs = load_specs()
    plans = [*fixed_topic_plans(specs, settings)]
    plans += [channel_topic_plan(specs, settings, c) for c in channels]
    plans += [output_topic_plan(specs, settings, c) for c in outputs]
    apply_topics(create_admin(settings), plans)


# -- workflows ------------------------------------------------------------------------------------

# parse_json puts the request payload under data.req, so each result carries its own request id.
RID_WORKFLOW: dict[str, Any] = {
    "name": "rid-echo",
    "condition": True,
    "tasks": [
        {
            "id": "parse",
            "name": "parse",
            "function": {"name": "parse_json", "input": {"source": "payload", "target": "req"}},
        },
        {
            "id": "mark",
            "name": "mark",
            "function": {"name": "map", "input": {"mappings": [{"path": "data.done", "logic": True}]}},
        },
    ],
}


def _sync_channel_doc(channel: str, workflow_id: str, config: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "channel_id": channel,
        "name": channel,
        "channel_type": "sync",
        "protocol": "http",
        "methods": ["POST"],
        "route_pattern": f"/{channel}",
        "workflow_ids": [workflow_id],
        "config": config or {},
    }


def _admin_setup(
    base: str,
    workflows: list[dict[str, Any]],
    channels: list[dict[str, Any]],
    connectors: list[dict[str, Any]] = (),
) -> None:  # type: ignore[assignment]
    """Create + activate documents through a gateway's admin API (as users do)."""
    with httpx.Client(base_url=base, timeout=30) as http:
        for doc in connectors:
            r = http.post("/api/v1/admin/connectors", json=doc)
            if r.status_code >= 300:
                raise RuntimeError(f"connector: {r.status_code} {r.text}")
        for doc in workflows:
            r = http.post("/api/v1/admin/workflows", json=doc)
            if r.status_code >= 300:
                raise RuntimeError(f"workflow: {r.status_code} {r.text}")
            wid = doc["workflow_id"]
            http.patch(f"/api/v1/admin/workflows/{wid}/status", json={"status": "active"}).raise_for_status()
        for doc in channels:
            r = http.post("/api/v1/admin/channels", json=doc)
            if r.status_code >= 300:
                raise RuntimeError(f"channel: {r.status_code} {r.text}")
            cid = doc["channel_id"]
            http.patch(f"/api/v1/admin/channels/{cid}/status", json={"status": "active"}).raise_for_status()


@contextlib.contextmanager
def _procs() -> Iterator[list[Proc]]:
    """Every process appended to the list is stopped on exit (killed if it does not stop)."""
    procs: list[Proc] = []
    try:
        yield procs
    finally:
        for p in reversed(procs):
            p.stop()


def _log_dir(log_dir: Path | None, name: str) -> Path:
    if log_dir is not None:
        path = log_dir / name
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix=f"quasar-fault-{name}-"))


# -- kill -9 a worker ------------------------------------------------------------------------------

_OK_COUNT = re.compile(r'^messages_total\{[^}]*status="ok"[^}]*\} ([0-9.e+]+)$', re.M)


def _metric_ok(port: int) -> float:
    with contextlib.suppress(httpx.HTTPError):
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
        return sum(float(v) for v in _OK_COUNT.findall(text))
    return 0.0


class _Collector(threading.Thread):
    """Tails the output and DLQ topics from the beginning, counting request ids."""

    def __init__(self, settings: Any, output: str, partitions: int) -> None:
        super().__init__(daemon=True, name="fault-collector")
        from app.kafka.names import TopicNames

        self.settings = settings
        self.output = output
        self.dlq = TopicNames(settings.topic_prefix).dlq
        self.partitions = partitions
        self.results: Counter[str] = Counter()
        self.dead: Counter[str] = Counter()
        self.unreadable = 0
        self.stop_flag = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from app.kafka.admin import create_admin, topic_partitions
        from app.kafka.config import reader_config

        try:
            dlq_parts = topic_partitions(create_admin(self.settings)).get(self.dlq, 1)
            consumer = Consumer(reader_config(self.settings))
            consumer.assign(
                [TopicPartition(self.output, p, OFFSET_BEGINNING) for p in range(self.partitions)]
                + [TopicPartition(self.dlq, p, OFFSET_BEGINNING) for p in range(dlq_parts)]
            )
            try:
                while not self.stop_flag.is_set():
                    for msg in consumer.consume(5000, 0.2):
                        if msg.error() is not None:
                            continue
                        self._count(msg.topic(), msg.key() or b"", msg.value())
            finally:
                consumer.close()
        except BaseException as exc:  # surfaced by the scenario
            self.error = exc

    def _count(self, topic: str, key: bytes, value: bytes | None) -> None:
        if key.startswith(b"__marker__/") or value is None:
            return
        try:
            doc = orjson.loads(value)
            if topic == self.output:
                self.results[doc["data"]["req"]["rid"]] += 1
            else:
                self.dead[doc["data"]["rid"]] += 1
        except (orjson.JSONDecodeError, KeyError, TypeError):
            self.unreadable += 1

    def seen(self, rid: str) -> bool:
        return rid in self.results or rid in self.dead


def kill_worker(
    bootstrap: str,
    n: int,
    *,
    log_dir: Path | None = None,
    partitions: int = 4,
    rate: float = 5000.0,
    kill_at: float = 0.3,
    timeout: float = 300.0,
    commit_interval_ms: int | None = None,
    max_uncommitted: int | None = None,
) -> dict[str, Any]:
    """Two `quasar worker` processes share the channel; kill -9 one when ~`kill_at` of the results are out.

    `commit_interval_ms` / `max_uncommitted`: the workers' QUASAR_WORKER_COMMIT_INTERVAL_MS /
    QUASAR_WORKER_MAX_UNCOMMITTED_RECORDS (None: the defaults); the duplicates they allow are what the kill
    shows."""
    from confluent_kafka import Producer

    from app.kafka.config import producer_config
    from app.kafka.names import TopicNames
    from bench._worker_setup import activate_channel

    logs = _log_dir(log_dir, "kill-worker")
    cadence: dict[str, int] = {}
    if commit_interval_ms is not None:
        cadence["worker_commit_interval_ms"] = commit_interval_ms
    if max_uncommitted is not None:
        cadence["worker_max_uncommitted_records"] = max_uncommitted
    settings = _settings(bootstrap, default_partitions=partitions, **cadence)
    channel = "orders"
    names = TopicNames(settings.topic_prefix)
    _apply_topics(settings, (channel,), (channel,))
    asyncio.run(activate_channel(settings, channel, RID_WORKFLOW))
    collector = _Collector(settings, names.output(channel), partitions)
    with _procs() as procs:
        (w1, p1), (w2, p2) = spawn_worker(settings, "w1", logs), spawn_worker(settings, "w2", logs)
        procs += [w1, w2]
        wait_ready(f"http://127.0.0.1:{p1}/readyz", w1)
        wait_ready(f"http://127.0.0.1:{p2}/readyz", w2)
        collector.start()
        producer = Producer(producer_config(settings, **{"linger.ms": 5}))
        topic = names.channel(channel)
        started = time.monotonic()
        killed_at: float | None = None
        killed_ok = 0.0
        produced_at_kill = 0
        rids = [f"r{i:07d}" for i in range(n)]

        def maybe_kill() -> None:
            nonlocal killed_at, killed_ok, produced_at_kill
            if killed_at is None and len(collector.results) >= kill_at * n:
                killed_ok = _metric_ok(p1)
                w1.kill9()
                killed_at = time.monotonic()
                produced_at_kill = i + 1

        for i, rid in enumerate(rids):
            value = orjson.dumps({"data": {"rid": rid, "n": i}})
            while True:
                try:
                    producer.produce(topic, value, key=rid.encode(), headers=[("x-request-id", rid.encode())])
                    break
                except BufferError:
                    producer.poll(0.05)
            if i % 500 == 499:
                producer.poll(0)
                # Pace the load so the kill lands mid-stream (a load generator's clock, not a broker wait).
                ahead = (i + 1) / rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)
                maybe_kill()
        producer.flush(30)
        produce_seconds = time.monotonic() - started
        if killed_at is None:
            wait_until(lambda: len(collector.results) >= kill_at * n, timeout, "results before the kill")
            i = n - 1
            maybe_kill()
        assert killed_at is not None

        def all_seen() -> bool:
            if collector.error is not None:
                raise collector.error
            return all(collector.seen(r) for r in rids[-1000:]) and sum(1 for r in rids if collector.seen(r)) == n

        with contextlib.suppress(TimeoutError):  # reported as lost below
            wait_until(all_seen, timeout, "every request accounted for", interval=0.5)
        accounted_at = time.monotonic()
        # Barrier: one sentinel per partition; once each has its result, everything before it on that
        # partition (redeliveries included) has been processed, so the duplicate count is final.
        sentinels = [f"sentinel-{p}" for p in range(partitions)]
        for p, rid in enumerate(sentinels):
            producer.produce(topic, orjson.dumps({"data": {"rid": rid}}), key=rid.encode(), partition=p)
        producer.flush(30)
        sentinels_ok = True
        try:
            wait_until(lambda: all(collector.seen(r) for r in sentinels), 60, "sentinel results")
        except TimeoutError:
            sentinels_ok = False
        collector.stop_flag.set()
        collector.join(10)
        survivor_alive = w2.alive
    wanted = set(rids) | set(sentinels)
    lost = [r for r in rids if not collector.seen(r)]
    duplicates = (
        sum(c - 1 for c in collector.results.values() if c > 1)
        + sum(c - 1 for c in collector.dead.values() if c > 1)
        + sum(1 for r in collector.results if r in collector.dead)
    )
    return {
        "scenario": "kill -9 one of two workers (async channel, outputs on)",
        "messages": n,
        "partitions": partitions,
        "produce_rate_target": rate,
        "commit_interval_ms": round(settings.commit_interval_s() * 1000),
        "max_uncommitted_records": settings.worker_max_uncommitted_records,
        "produce_seconds": round(produce_seconds, 2),
        "killed_worker_ok_before_kill": killed_ok,
        "produced_at_kill": produced_at_kill,
        "results": sum(collector.results.values()),
        "dlq": sum(collector.dead.values()),
        "distinct_accounted": sum(1 for r in rids if collector.seen(r)),
        "lost": len(lost),
        "lost_sample": lost[:10],
        "duplicates": duplicates,
        "unexpected_ids": sorted((set(collector.results) | set(collector.dead)) - wanted)[:10],
        "unreadable_records": collector.unreadable,
        "seconds_kill_to_all_accounted": round(accounted_at - killed_at, 2),
        "sentinels_seen": sentinels_ok,
        "survivor_alive": survivor_alive,
        "logs": str(logs),
    }


# -- restart the gateway under sync load -----------------------------------------------------------


@dataclass
class _Call:
    start: float
    end: float
    outcome: str  # "200", "503", ..., or an exception class name


@dataclass
class _Load:
    """Closed-loop HTTP load: `concurrency` callers, each with a bounded client timeout."""

    url: str
    body: Callable[[int], bytes]
    concurrency: int
    timeout: float
    headers: Callable[[int], dict[str, str]] = field(default=lambda i: {})
    calls: list[_Call] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def run(self) -> None:
        limits = httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency)
        counter = iter(range(10**9))
        async with httpx.AsyncClient(limits=limits, timeout=self.timeout) as client:

            async def caller() -> None:
                while not self.stop.is_set():
                    i = next(counter)
                    t0 = time.monotonic()
                    try:
                        r = await client.post(
                            self.url,
                            content=self.body(i),
                            headers={"content-type": "application/json", **self.headers(i)},
                        )
                        outcome = str(r.status_code)
                    except httpx.HTTPError as exc:
                        outcome = type(exc).__name__
                    self.calls.append(_Call(t0, time.monotonic(), outcome))
                    if not outcome.startswith("2"):
                        # A refused connection fails in microseconds: don't spin the CPU while down.
                        await asyncio.sleep(0.05)

            await asyncio.gather(*(caller() for _ in range(self.concurrency)))

    def summary(self, since: float = 0.0, until: float = float("inf")) -> dict[str, int]:
        return dict(Counter(c.outcome for c in self.calls if since <= c.start < until))


def _server_or_transport_failure(outcome: str) -> bool:
    return outcome[0] == "5" if outcome.isdigit() else True


async def _phase(seconds: float) -> None:
    # The load runs for a fixed wall-clock phase; this is the load generator's schedule.
    await asyncio.sleep(seconds)


def gateway_restart(
    bootstrap: str,
    *,
    log_dir: Path | None = None,
    concurrency: int = 20,
    before: float = 2.0,
    after: float = 3.0,
    client_timeout: float = 5.0,
) -> dict[str, Any]:
    """kill -9 the gateway under sync load, start it again on the same port, keep the load running."""
    logs = _log_dir(log_dir, "gateway-restart")
    settings = _settings(bootstrap, processing_timeout_ms=3000)
    _apply_topics(settings)
    with _procs() as procs:
        worker, wport = spawn_worker(settings, "w1", logs)
        procs.append(worker)
        port = _free_port()
        gw, base = spawn_gateway(settings, "gw-restart", logs, port)
        procs.append(gw)
        wait_ready(f"http://127.0.0.1:{wport}/readyz", worker)
        wait_ready(f"{base}/readyz", gw)
        wf = {"workflow_id": "echo", **RID_WORKFLOW}
        _admin_setup(base, [wf], [_sync_channel_doc("echo", "echo")])
        url = f"{base}/api/v1/data/echo"
        wait_until(
            lambda: httpx.post(url, json={"data": {"rid": "probe"}}, timeout=5).status_code == 200,
            30,
            "first sync reply",
        )

        async def run() -> dict[str, Any]:
            load = _Load(url, lambda i: orjson.dumps({"data": {"rid": f"g{i}"}}), concurrency, client_timeout)
            task = asyncio.create_task(load.run())
            await _phase(before)
            t_kill = time.monotonic()
            await asyncio.to_thread(gw.kill9)
            new_gw, _ = spawn_gateway(settings, "gw-restart", logs, port)
            procs.append(new_gw)
            await asyncio.to_thread(wait_ready, f"{base}/readyz", new_gw)
            t_ready = time.monotonic()
            await _phase(after)
            load.stop.set()
            await asyncio.wait_for(task, client_timeout + 10)
            calls = load.calls
            late = [c for c in calls if c.start >= t_ready + 1.0]
            return {
                "scenario": "kill -9 + restart the gateway under sync load",
                "concurrency": concurrency,
                "client_timeout_s": client_timeout,
                "requests": len(calls),
                "before_kill": load.summary(0, t_kill),
                "kill_to_ready": load.summary(t_kill, t_ready),
                "after_ready": load.summary(t_ready),
                "failed_calls_spanning_kill": sum(
                    1 for c in calls if c.start < t_kill <= c.end and not c.outcome.startswith("2")
                ),
                "non_5xx_failures": sum(
                    1 for c in calls if not c.outcome.startswith("2") and not _server_or_transport_failure(c.outcome)
                ),
                "max_call_seconds": round(max((c.end - c.start for c in calls), default=0.0), 3),
                "restart_seconds": round(t_ready - t_kill, 2),
                "ok_ratio_after_ready_plus_1s": round(sum(1 for c in late if c.outcome == "200") / len(late), 4)
                if late
                else 0.0,
                "logs": str(logs),
            }

        return asyncio.run(run())


# -- broker unreachable at startup -----------------------------------------------------------------


def broker_unreachable(
    *, log_dir: Path | None = None, down_seconds: float = 3.0, timeout: float = 60.0
) -> dict[str, Any]:
    """Start worker + gateway against a port where no broker listens yet, then start the broker there."""
    from app.kafka.broker import EmbeddedBroker

    logs = _log_dir(log_dir, "broker-unreachable")
    port = _free_port()
    settings = _settings(f"127.0.0.1:{port}")
    with _procs() as procs, contextlib.ExitStack() as stack:
        worker, wport = spawn_worker(settings, "w1", logs)
        gw, base = spawn_gateway(settings, "gw1", logs)
        procs += [worker, gw]
        t0 = time.monotonic()
        # Both must have reported the outage (their own lines) before the broker shows up.
        wait_until(
            lambda: worker.text().count("retrying") >= 2 and gw.text().count("retrying") >= 2,
            30,
            "retry lines",
        )
        remaining = down_seconds - (time.monotonic() - t0)
        if remaining > 0:
            time.sleep(remaining)  # keep the broker away for a while: the retries are what is tested
        down = {p.name: {"alive": p.alive, "lines": p.text().count("\n"), "text": p.text()[-2000:]} for p in procs}
        broker = stack.enter_context(EmbeddedBroker(port=port))
        t_broker = time.monotonic()
        _apply_topics(settings)
        wait_ready(f"http://127.0.0.1:{wport}/readyz", worker, timeout)
        wait_ready(f"{base}/readyz", gw, timeout)
        t_up = time.monotonic()
        result = {
            "scenario": "broker unreachable at startup",
            "down_seconds": round(t_broker - t0, 2),
            "ready_seconds_after_broker": round(t_up - t_broker, 2),
            "while_down": down,
            "broker": broker.bootstrap,
            "traceback_lines": sum(p.text().count("Traceback") for p in procs),
            "logs": str(logs),
        }
    return result


# -- concurrent conflicting admin writes -----------------------------------------------------------


async def _serve_gateway(settings: Any) -> tuple[Any, str, Callable[[], Awaitable[None]]]:
    """An in-process gateway (its own config reader) on a free port; returns (app, url, stop)."""
    import uvicorn

    from app.gateway.app import create_app
    from app.gateway.server import server_config

    app = create_app(settings)
    port = _free_port()
    # The gateway's own server config (guarded protocol, keep-alive), as `quasar gateway` runs it.
    server = uvicorn.Server(server_config(app, settings, host="127.0.0.1", port=port, log_level="warning", loop="none"))
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 60
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("gateway exited during startup")
        if time.monotonic() > deadline:
            raise TimeoutError("gateway did not start within 60 s")
        await asyncio.sleep(0.02)  # uvicorn has no startup event; `started` flips once it listens

    async def stop() -> None:
        server.should_exit = True
        await asyncio.wait_for(task, 15)

    return app, f"http://127.0.0.1:{port}", stop


def _tag_task(tag: str) -> dict[str, Any]:
    return {
        "id": tag,
        "name": tag,
        "function": {"name": "map", "input": {"mappings": [{"path": f"data.{tag}", "logic": True}]}},
    }


def admin_conflicts(bootstrap: str, *, writers: int = 100) -> dict[str, Any]:
    """`writers` concurrent read-modify-write updates of one draft (If-Match), via 2 gateways + a writer."""
    return asyncio.run(_admin_conflicts(bootstrap, writers))


async def _admin_conflicts(bootstrap: str, writers: int) -> dict[str, Any]:
    from app.config_store import ConfigReader, ConfigWriter, Update
    from app.errors import QuasarError

    settings = _settings(bootstrap)
    _apply_topics(settings)
    app_a, url_a, stop_a = await _serve_gateway(settings.model_copy(update={"instance_id": "gw-a"}))
    app_b, url_b, stop_b = await _serve_gateway(settings.model_copy(update={"instance_id": "gw-b"}))
    reader = ConfigReader(settings.model_copy(update={"instance_id": "direct"}), name="direct-writer")
    await reader.ready()
    writer = ConfigWriter(reader)
    wid = "contended"
    base_doc = {"workflow_id": wid, "name": wid, "tasks": [_tag_task("base")]}
    http_a = httpx.AsyncClient(base_url=url_a, timeout=60)
    http_b = httpx.AsyncClient(base_url=url_b, timeout=60)
    try:
        r = await http_a.post("/api/v1/admin/workflows", json=base_doc)
        assert r.status_code == 201, r.text
        start = asyncio.Event()

        async def via_http(http: httpx.AsyncClient, tag: str) -> str:
            await start.wait()
            current = (await http.get(f"/api/v1/admin/workflows/{wid}")).json()["data"]
            tasks = [*current["tasks"], _tag_task(tag)]
            r = await http.put(
                f"/api/v1/admin/workflows/{wid}",
                json={"name": wid, "tasks": tasks},
                headers={"If-Match": str(current["revision"])},
            )
            return str(r.status_code)

        async def direct(tag: str) -> str:
            await start.wait()
            obj = reader.state.get("workflow", wid)
            assert obj is not None and obj.latest is not None
            doc = dict(obj.versions[obj.latest])
            tasks = [*doc["tasks"], _tag_task(tag)]
            try:
                await writer.apply(
                    "workflow", wid, Update({"name": wid, "tasks": tasks}), expected_revision=obj.revision
                )
                return "200"
            except QuasarError as exc:
                return str(exc.status)

        tags = [f"w{i:03d}" for i in range(writers)]
        clients: list[Awaitable[str]] = []
        for i, tag in enumerate(tags):
            clients.append(
                via_http(http_a, tag) if i % 3 == 0 else via_http(http_b, tag) if i % 3 == 1 else direct(tag)
            )
        # Read barrier first: the create returned once gateway A applied it; gateway B and the direct
        # writer's reader may still be a fetch wait behind (seen as a missing workflow on a fast box).
        await app_b.state.config_reader.sync()
        await reader.sync()
        futures = [asyncio.ensure_future(c) for c in clients]
        started = time.monotonic()
        start.set()
        outcomes = await asyncio.gather(*futures)
        seconds = time.monotonic() - started
        # Read barrier on every reader, then compare what each one folded.
        readers = {"gw-a": app_a.state.config_reader, "gw-b": app_b.state.config_reader, "direct": reader}
        for r_ in readers.values():
            await r_.sync()
        fingerprints = {name: r_.state.fingerprint() for name, r_ in readers.items()}
        finals: dict[str, set[str]] = {}
        for name, http in (("gw-a", http_a), ("gw-b", http_b)):
            doc = (await http.get(f"/api/v1/admin/workflows/{wid}")).json()["data"]
            finals[name] = {t["id"] for t in doc["tasks"]} - {"base"}
        obj = reader.state.get("workflow", wid)
        assert obj is not None and obj.latest is not None
        finals["direct"] = {t["id"] for t in obj.versions[obj.latest]["tasks"]} - {"base"}
        acked = {t for t, o in zip(tags, outcomes, strict=True) if o == "200"}
        rejected = {t for t, o in zip(tags, outcomes, strict=True) if o == "409"}
        final = finals["direct"]
        return {
            "scenario": f"{writers} concurrent conflicting admin writes (2 gateways + direct ConfigWriter)",
            "writers": writers,
            "seconds": round(seconds, 2),
            "outcomes": dict(Counter(outcomes)),
            "acknowledged": len(acked),
            "rejected_409": len(rejected),
            "lost_updates": sorted(acked - final),
            "rejected_but_present": sorted(rejected & final),
            "final_revision": obj.revision,
            "final_states_equal": len({frozenset(v) for v in finals.values()}) == 1,
            "fingerprints_equal": len(set(fingerprints.values())) == 1,
            "fingerprints": fingerprints,
        }
    finally:
        await http_a.aclose()
        await http_b.aclose()
        await reader.stop()
        await stop_b()
        await stop_a()


# -- Redis stopped and restarted under load --------------------------------------------------------


def redis_restart(
    bootstrap: str,
    *,
    log_dir: Path | None = None,
    concurrency: int = 10,
    phase: float = 2.0,
    client_timeout: float = 5.0,
) -> dict[str, Any]:
    """A channel with rate limit + dedup on a private Redis; Redis is killed and restarted under load."""
    logs = _log_dir(log_dir, "redis-restart")
    redis_srv = RedisServer(logs)
    redis_srv.start()
    settings = _settings(bootstrap, processing_timeout_ms=3000, redis_url=redis_srv.url)
    _apply_topics(settings)
    try:
        with _procs() as procs:
            worker, wport = spawn_worker(settings, "w1", logs)
            gw, base = spawn_gateway(settings, "gw1", logs)
            procs += [worker, gw]
            wait_ready(f"http://127.0.0.1:{wport}/readyz", worker)
            wait_ready(f"{base}/readyz", gw)
            governed = {
                "rate_limit": {"requests_per_second": 100000, "burst": 100000},
                "deduplication": {"header": "Idempotency-Key", "window_secs": 60},
            }
            wf = {"workflow_id": "gov", **RID_WORKFLOW}
            _admin_setup(base, [wf], [_sync_channel_doc("gov", "gov", governed)])
            url = f"{base}/api/v1/data/gov"

            def dedup_works(key: str) -> tuple[int, int]:
                h = {"Idempotency-Key": key}
                first = httpx.post(url, json={"data": {"rid": key}}, headers=h, timeout=client_timeout)
                second = httpx.post(url, json={"data": {"rid": key}}, headers=h, timeout=client_timeout)
                return first.status_code, second.status_code

            wait_until(lambda: dedup_works(f"probe-{uuid.uuid4().hex}")[0] == 200, 30, "first governed reply")
            before_pair = dedup_works(f"before-{uuid.uuid4().hex}")

            async def run() -> dict[str, Any]:
                run_id = uuid.uuid4().hex[:6]
                load = _Load(
                    url,
                    lambda i: orjson.dumps({"data": {"rid": f"x{i}"}}),
                    concurrency,
                    client_timeout,
                    headers=lambda i: {"Idempotency-Key": f"{run_id}-{i}"},
                )
                task = asyncio.create_task(load.run())
                await _phase(phase)
                t_down = time.monotonic()
                await asyncio.to_thread(redis_srv.stop)
                await _phase(phase)
                t_up = time.monotonic()
                await asyncio.to_thread(redis_srv.start)
                t_ready = time.monotonic()
                await _phase(phase)
                load.stop.set()
                await asyncio.wait_for(task, client_timeout + 10)
                return {
                    "before": load.summary(0, t_down),
                    "redis_down": load.summary(t_down, t_up),
                    "after_restart": load.summary(t_ready),
                    "max_call_seconds": round(max((c.end - c.start for c in load.calls), default=0.0), 3),
                }

            phases = asyncio.run(run())
            # Dedup is back once the store reconnects: the second request with the same key is refused.
            after_pair = wait_until(
                lambda: (p := dedup_works(f"after-{uuid.uuid4().hex}"))[1] != 200 and p,
                30,
                "dedup after restart",
            )
            health = httpx.get(f"{base}/health", timeout=5).json()
            return {
                "scenario": "redis (rate limit + dedup store) killed and restarted under load",
                "concurrency": concurrency,
                **phases,
                "dedup_before": list(before_pair),
                "dedup_after": list(after_pair),
                "health_after": health,
                "logs": str(logs),
            }
    finally:
        redis_srv.stop()


# -- the upstream of an http_call connector stopped and restarted ----------------------------------


class _Upstream:
    """A tiny aiohttp JSON server in a thread, stoppable and restartable on the same port."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        from aiohttp import web

        ready = threading.Event()

        async def handle(request: web.Request) -> web.Response:
            return web.json_response({"upstream": "ok", "path": request.path})

        async def serve() -> None:
            app = web.Application()
            app.router.add_route("*", "/{tail:.*}", handle)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()
            ready.set()

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="upstream")
        self._thread.start()
        asyncio.run_coroutine_threadsafe(serve(), self._loop).result(10)
        ready.wait(10)

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
        self._loop.close()
        self._loop = None


def upstream_restart(
    bootstrap: str,
    *,
    log_dir: Path | None = None,
    concurrency: int = 10,
    phase: float = 2.0,
    client_timeout: float = 5.0,
    recover_timeout: float = 60.0,
) -> dict[str, Any]:
    """A sync channel whose workflow calls an HTTP connector; the upstream goes away and comes back."""
    logs = _log_dir(log_dir, "upstream-restart")
    upstream = _Upstream(_free_port())
    upstream.start()
    settings = _settings(bootstrap, processing_timeout_ms=3000)
    _apply_topics(settings)
    try:
        with _procs() as procs:
            worker, wport = spawn_worker(settings, "w1", logs)
            gw, base = spawn_gateway(settings, "gw1", logs)
            procs += [worker, gw]
            wait_ready(f"http://127.0.0.1:{wport}/readyz", worker)
            wait_ready(f"{base}/readyz", gw)
            connector = {
                "id": "upstream",
                "name": "upstream",
                "connector_type": "http",
                "config": {
                    "url": f"http://127.0.0.1:{upstream.port}",
                    "allow_private_urls": True,
                    "timeout_ms": 1000,
                    "retry": {"max_retries": 0, "retry_delay_ms": 10},
                },
            }
            wf = {
                "workflow_id": "calls",
                "name": "calls",
                "tasks": [
                    {
                        "id": "call",
                        "name": "call",
                        "function": {
                            "name": "http_call",
                            "input": {
                                "connector": "upstream",
                                "path": "/ping",
                                "response_path": "data.reply",
                            },
                        },
                    },
                ],
            }
            _admin_setup(base, [wf], [_sync_channel_doc("calls", "calls")], [connector])
            url = f"{base}/api/v1/data/calls"
            wait_until(lambda: httpx.post(url, json={"data": {}}, timeout=5).status_code == 200, 30, "first reply")

            async def run() -> dict[str, Any]:
                load = _Load(url, lambda i: b'{"data": {}}', concurrency, client_timeout)
                task = asyncio.create_task(load.run())
                await _phase(phase)
                t_down = time.monotonic()
                await asyncio.to_thread(upstream.stop)
                await _phase(phase)
                t_up = time.monotonic()
                await asyncio.to_thread(upstream.start)
                # The connector's circuit breaker (opened while down) lets a probe through after its
                # recovery timeout (30 s); keep the load on until a call succeeds again, bounded.
                deadline = t_up + recover_timeout
                while not any(c.outcome == "200" and c.start >= t_up for c in load.calls):
                    if time.monotonic() > deadline:
                        break
                    await asyncio.sleep(0.2)  # the load is running; check its record
                t_rec = time.monotonic()
                await _phase(phase)
                load.stop.set()
                await asyncio.wait_for(task, client_timeout + 10)
                return {
                    "before": load.summary(0, t_down),
                    "upstream_down": load.summary(t_down + 0.5, t_up),
                    "restart_to_recovery": load.summary(t_up, t_rec),
                    "recovered_after_seconds": round(t_rec - t_up, 2),
                    "after_recovery": load.summary(t_rec + 0.5),
                    "max_call_seconds": round(max((c.end - c.start for c in load.calls), default=0.0), 3),
                }

            phases = asyncio.run(run())
            body = httpx.post(url, json={"data": {}}, timeout=5).json()
            return {
                "scenario": "http_call upstream stopped and restarted under load",
                "concurrency": concurrency,
                **phases,
                "reply_after": body,
                "logs": str(logs),
            }
    finally:
        upstream.stop()


# -- main ------------------------------------------------------------------------------------------


def _markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Fault scenarios (`make proof`)",
        "",
        f"Run at {results['run_at']} on this machine (`python -m bench.faults {results['argv']}`).",
        "",
    ]
    for name, res in results["scenarios"].items():
        lines += [
            f"## {name}",
            "",
            "```json",
            json.dumps({k: v for k, v in res.items() if k != "logs"}, indent=2, default=str)[:4000],
            "```",
            "",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000, help="messages of the worker-kill scenario")
    parser.add_argument("--rate", type=float, default=5000.0, help="produce rate of the worker-kill scenario")
    parser.add_argument(
        "--commit-interval-ms", type=int, default=None, help="workers' commit interval (default: the setting's)"
    )
    parser.add_argument(
        "--max-uncommitted", type=int, default=None, help="workers' uncommitted-records bound (default: the setting's)"
    )
    parser.add_argument("--only", default="", help="comma list of scenario names (default: all)")
    parser.add_argument("--out", type=Path, default=RESULTS / "faults.json")
    args = parser.parse_args(argv)
    from app.kafka.broker import EmbeddedBroker

    scenarios: dict[str, Callable[[str, Path], dict[str, Any]]] = {
        "broker_unreachable": lambda b, d: broker_unreachable(log_dir=d),
        "kill_worker": lambda b, d: kill_worker(
            b,
            args.messages,
            log_dir=d,
            rate=args.rate,
            timeout=900,
            commit_interval_ms=args.commit_interval_ms,
            max_uncommitted=args.max_uncommitted,
        ),
        "gateway_restart": lambda b, d: gateway_restart(b, log_dir=d, concurrency=50, before=5, after=10),
        "admin_conflicts": lambda b, d: admin_conflicts(b, writers=100),
        "redis_restart": lambda b, d: redis_restart(b, log_dir=d, concurrency=20, phase=4),
        "upstream_restart": lambda b, d: upstream_restart(b, log_dir=d, concurrency=20, phase=4),
    }
    only = [s for s in args.only.split(",") if s] or list(scenarios)
    logs = Path(tempfile.mkdtemp(prefix="quasar-proof-"))
    out: dict[str, Any] = {
        "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "argv": " ".join(argv if argv is not None else sys.argv[1:]),
        "scenarios": {},
    }
    with EmbeddedBroker() as broker:
        for name in only:
            print(f"== {name}", flush=True)
            t0 = time.monotonic()
            try:
                res = scenarios[name](broker.bootstrap, logs)
            except Exception as exc:  # one failed scenario is reported; the others still run
                res = {"error": f"{type(exc).__name__}: {exc}"[:3000]}
            res["wall_seconds"] = round(time.monotonic() - t0, 1)
            out["scenarios"][name] = res
            print(
                json.dumps({k: v for k, v in res.items() if k not in ("logs", "while_down")}, indent=1, default=str)[
                    :3000
                ],
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2, default=str) + "\n")
    args.out.with_suffix(".md").write_text(_markdown(out))
    print(f"written {args.out} and {args.out.with_suffix('.md')}; logs in {logs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
