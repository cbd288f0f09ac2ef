"""All benchmarks in one go: `python -m bench.run_all` (= `make bench`). One table, one JSON file.

Every figure comes with a baseline measured in the same run on this machine, and the ratio:

- HTTP bridge (Orion's scenarios: health, simple, complex, 12 workflows) at concurrency 1, 10, 50, 100,
  through `quasar gateway` + `quasar worker` processes; baseline: a bare uvicorn JSON echo at the same
  concurrency. Reload under load: complex at concurrency 50 while a definition is republished (new
  version + activate) every 500 ms; baseline: the same without reloads.
- async throughput of one `quasar worker` (complex workflow, outputs on, the channel's default tracing:
  failures only for records produced straight to Kafka) vs the same loop written by
  hand (confluent-kafka consume -> the workflow's logic in plain Python -> produce), and the engine alone vs
  that logic in process (bench/worker.py).
- config propagation p50/p99: activate -> both workers and both gateways have applied it; baseline:
  one record's produce -> consume latency on the same broker.
- worker RSS with 1,000 active workflows (baseline: empty config) and worker ready time with 10,000
  config records (baseline: empty config).

Default run: a few minutes (`--seconds 3`). Longer: `--seconds 10 --messages 100000 --rounds 50`.
Writes bench/results/latest.json (and prints the table).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.loadgen import load

__all__ = ["Row", "main"]

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"


@dataclass
class Row:
    """One line of the table: a figure, its same-run baseline and figure/baseline."""

    group: str
    name: str
    value: float
    unit: str
    baseline: float
    baseline_name: str
    extra: str = ""

    @property
    def ratio(self) -> float:
        return self.value / self.baseline if self.baseline else float("nan")


def _table(rows: list[Row]) -> str:
    head = f"{'benchmark':<44} {'value':>12} {'baseline':>12} {'ratio':>7}  unit / baseline / notes"
    lines = [head, "-" * len(head)]
    group = None
    for r in rows:
        if r.group != group:
            group = r.group
            lines.append(f"[{group}]")
        lines.append(
            f"  {r.name:<42} {r.value:>12,.1f} {r.baseline:>12,.1f} {r.ratio:>7.2f}  "
            f"{r.unit} / {r.baseline_name}" + (f" / {r.extra}" if r.extra else "")
        )
    return "\n".join(lines)


# -- load generation ---------------------------------------------------------------------------------


# -- processes ---------------------------------------------------------------------------------------


def _env(bootstrap: str, prefix: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUASAR_")}
    env.update(
        QUASAR_KAFKA_BOOTSTRAP=bootstrap,
        QUASAR_TOPIC_PREFIX=prefix,
        QUASAR_FETCH_WAIT_MAX_MS="10",
        QUASAR_SESSION_TIMEOUT_MS="3000",
        QUASAR_LOG_LEVEL="warning",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def _stack(
    bootstrap: str, prefix: str, logs: Path, *, workers: int = 1, gateways: int = 1
) -> Iterator[tuple[list[tuple[Any, int]], list[tuple[Any, str]]]]:
    """`workers` worker and `gateways` gateway processes on `prefix` (topics applied), all ready."""
    from bench.faults import Proc, spawn, wait_ready

    _apply(bootstrap, prefix)
    procs: list[Proc] = []
    ws: list[tuple[Any, int]] = []
    gs: list[tuple[Any, str]] = []
    try:
        for i in range(workers):
            port = _free_port()
            p = spawn(
                f"worker{i}",
                [
                    sys.executable,
                    "-m",
                    "app.cli",
                    "worker",
                    "--instance-id",
                    f"bw{i}",
                    "--metrics-port",
                    str(port),
                ],
                _env(bootstrap, prefix),
                logs,
            )
            procs.append(p)
            ws.append((p, port))
        for i in range(gateways):
            port = _free_port()
            p = spawn(
                f"gateway{i}",
                [sys.executable, "-m", "app.cli", "gateway", "--port", str(port), "--instance-id", f"bg{i}"],
                _env(bootstrap, prefix),
                logs,
            )
            procs.append(p)
            gs.append((p, f"http://127.0.0.1:{port}"))
        for p, port in ws:
            wait_ready(f"http://127.0.0.1:{port}/readyz", p, 120)
        for p, url in gs:
            wait_ready(f"{url}/readyz", p, 120)
        yield ws, gs
    finally:
        for p in reversed(procs):
            p.stop()


def _apply(bootstrap: str, prefix: str) -> None:
    from app.kafka.admin import create_admin
    from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
    from app.settings import Settings

    settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
    apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings))


def _free_port() -> int:
    from app.kafka.broker import free_port

    return free_port()


def _cpu(pid: int) -> float:
    from bench.gateway import _cpu_seconds

    return _cpu_seconds(pid)


# -- 1. the HTTP bridge --------------------------------------------------------------------------------


def bench_http(bootstrap: str, logs: Path, args: argparse.Namespace, rows: list[Row]) -> None:
    from bench.faults import spawn
    from bench.gateway import _check_response, _load_workloads
    from bench.workloads import load_workloads

    workloads = {w.name: w for w in load_workloads()}
    wanted = [n for n in ("simple", "complex", "multi") if n in workloads]
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    echo_port = _free_port()
    echo = spawn(
        "echo",
        [sys.executable, "-m", "bench.gateway", "--role", "echo", "--port", str(echo_port)],
        _env(bootstrap, prefix),
        logs,
    )
    echo_url = f"http://127.0.0.1:{echo_port}/"
    try:
        _wait_echo(echo_url, echo)
        with _stack(bootstrap, prefix, logs) as (_ws, gs):
            base = gs[0][1]
            with httpx.Client(base_url=base, timeout=30) as http:
                channels = _load_workloads(http, [workloads[n] for n in wanted])
                for n in wanted:
                    _check_response(http, channels[n], workloads[n])
            body = workloads[wanted[0]].payload_file
            for c in args.concurrency:
                load(echo_url, min(1.0, args.seconds), c, body)  # warm-up
                echo_load = load(echo_url, args.seconds, c, body)
                scenarios: list[tuple[str, str, Path | None]] = [("health", f"{base}/health", None)]
                scenarios += [
                    (workloads[n].title, f"{base}/api/v1/data/{channels[n]}", workloads[n].payload_file) for n in wanted
                ]
                for title, url, payload in scenarios:
                    load(url, min(1.0, args.seconds), c, payload)
                    res = load(url, args.seconds, c, payload)
                    rows.append(
                        Row(
                            f"HTTP bridge, concurrency {c}",
                            f"{title} req/s",
                            res.rps,
                            "req/s",
                            echo_load.rps,
                            "bare uvicorn echo req/s",
                            f"p50 {res.p50_ms:.1f} ms p99 {res.p99_ms:.1f} ms errors {res.errors}/{res.total}",
                        )
                    )
                    print(_table(rows[-1:]), flush=True)
            # Reload under load: republish the complex workflow every 500 ms while measuring.
            if "complex" in wanted:
                w = workloads["complex"]
                url = f"{base}/api/v1/data/{channels['complex']}"
                quiet = load(url, args.seconds, 50, w.payload_file)
                stop = threading.Event()
                reloads = _Reloader(base, w.workflow_docs()[0], stop)
                reloads.start()
                try:
                    busy = load(url, args.seconds, 50, w.payload_file)
                finally:
                    stop.set()
                    reloads.join(30)
                rows.append(
                    Row(
                        "HTTP bridge, reload under load",
                        "complex req/s, republish every 500 ms",
                        busy.rps,
                        "req/s",
                        quiet.rps,
                        "same run without reloads",
                        f"p99 {busy.p99_ms:.1f} ms (quiet {quiet.p99_ms:.1f}) "
                        f"errors {busy.errors}/{busy.total} "
                        f"reloads {reloads.done} failed {reloads.failed}",
                    )
                )
                print(_table(rows[-1:]), flush=True)
    finally:
        echo.stop()


def _wait_echo(url: str, proc: Any) -> None:
    from bench.faults import wait_until

    def up() -> bool:
        if not proc.alive:
            raise RuntimeError(proc.tail())
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(url, content=b'{"data": {}}', timeout=1)
            return True
        return False

    wait_until(up, 30, "echo server")


class _Reloader(threading.Thread):
    """New version + activate of one workflow every 500 ms through the admin API."""

    def __init__(self, base: str, doc: dict[str, Any], stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.base, self.doc, self.stop_flag = base, doc, stop
        self.done = self.failed = 0

    def run(self) -> None:
        wid = self.doc["workflow_id"]
        with httpx.Client(base_url=self.base, timeout=30) as http:
            while not self.stop_flag.wait(0.5):  # the 500 ms republish schedule
                try:
                    r = http.post(f"/api/v1/admin/workflows/{wid}/versions")
                    r.raise_for_status()
                    http.put(
                        f"/api/v1/admin/workflows/{wid}",
                        json={k: v for k, v in self.doc.items() if k != "workflow_id"},
                    ).raise_for_status()
                    http.patch(f"/api/v1/admin/workflows/{wid}/status", json={"status": "active"}).raise_for_status()
                    self.done += 1
                except httpx.HTTPError:
                    self.failed += 1


# -- 2. async throughput per worker vs the raw loop ------------------------------------------------


def bench_worker(bootstrap: str, args: argparse.Namespace, rows: list[Row]) -> None:
    from bench.worker import _create_topics, _fill, _worker_run, hand_loop, in_process_pair, raw_loop

    def filled() -> tuple[str, str]:
        src, dst = f"bench-in-{uuid.uuid4().hex[:8]}", f"bench-out-{uuid.uuid4().hex[:8]}"
        _create_topics(bootstrap, [src, dst], 4)
        _fill(bootstrap, src, args.messages)
        return src, dst

    n = args.messages
    raw = n / raw_loop(bootstrap, *filled(), n).seconds
    hand = n / hand_loop(bootstrap, *filled(), n).seconds
    worker = n / _worker_run(bootstrap, n, 600).seconds
    worker2 = n / _worker_run(bootstrap, n, 600, processes=2).seconds
    group = "async throughput (one process)"
    note = f"{n} msgs, outputs on, default tracing (failures only), steady-state rate"
    rows.append(Row(group, "hand-written loop (complex logic) msgs/s", hand, "msgs/s", raw, "raw loop msgs/s", note))
    rows.append(
        Row(group, "quasar worker, complex workflow msgs/s", worker, "msgs/s", hand, "hand-written loop msgs/s", note)
    )
    rows.append(
        Row(
            group,
            "quasar worker --processes 2 msgs/s",
            worker2,
            "msgs/s",
            worker,
            "one worker process msgs/s",
            note + " (one box: broker, workers and load share the cores)",
        )
    )
    # In process, no Kafka: the engine next to the same logic written by hand (issue 19: >= 0.5).
    hand_s, engine_s = in_process_pair(n)
    rows.append(
        Row(
            group,
            "engine alone (no Kafka), complex workflow msgs/s",
            n / engine_s,
            "msgs/s",
            n / hand_s,
            "hand-written logic msgs/s",
            "decode -> 4 tasks -> encode, in process",
        )
    )
    print(_table(rows[-4:]), flush=True)


# -- 3. config propagation -----------------------------------------------------------------------------


def _raw_roundtrip(bootstrap: str, rounds: int) -> list[float]:
    """Produce one record, consume it (fetch.wait 10 ms, as Quasar's readers): the broker's floor."""
    from confluent_kafka import Consumer, Producer

    from bench.worker import _create_topics

    topic = f"bench-rt-{uuid.uuid4().hex[:8]}"
    _create_topics(bootstrap, [topic], 1)
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"rt-{uuid.uuid4().hex}",
            "fetch.wait.max.ms": 10,
            "enable.auto.commit": False,
        }
    )
    from confluent_kafka import OFFSET_END, TopicPartition

    consumer.assign([TopicPartition(topic, 0, OFFSET_END)])
    out: list[float] = []
    try:
        for i in range(rounds + 1):
            marker = f"m{i}".encode()
            t0 = time.perf_counter()
            producer.produce(topic, marker)
            producer.flush(10)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                msg = consumer.poll(0.5)
                if msg is not None and msg.error() is None and msg.value() == marker:
                    break
            if i:  # the first round positions the consumer
                out.append((time.perf_counter() - t0) * 1000)
    finally:
        consumer.close()
    return out


def _q(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))] if s else float("nan")


def bench_propagation(bootstrap: str, logs: Path, args: argparse.Namespace, rows: list[Row]) -> None:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    with _stack(bootstrap, prefix, logs, workers=2, gateways=2) as (ws, gs):
        admin = httpx.Client(base_url=gs[0][1], timeout=30)
        probes = [f"http://127.0.0.1:{port}/health" for _, port in ws] + [f"{url}/health" for _, url in gs]
        clients = [httpx.Client(timeout=5) for _ in probes]
        samples: list[float] = []
        try:
            for i in range(args.rounds):
                wid = f"prop-{i}"
                admin.post(
                    "/api/v1/admin/workflows",
                    json={
                        "workflow_id": wid,
                        "name": wid,
                        "tasks": [
                            {
                                "id": "m",
                                "name": "m",
                                "function": {
                                    "name": "map",
                                    "input": {"mappings": [{"path": "data.x", "logic": i}]},
                                },
                            }
                        ],
                    },
                ).raise_for_status()
                t0 = time.perf_counter()
                admin.patch(f"/api/v1/admin/workflows/{wid}/status", json={"status": "active"}).raise_for_status()
                # The writing gateway answered after folding the activation: its offset is the target.
                target = admin.get("/health").json()["config_offset"]
                pending = set(range(len(probes)))
                deadline = time.monotonic() + 30
                while pending and time.monotonic() < deadline:
                    for j in list(pending):
                        if clients[j].get(probes[j]).json().get("config_offset", -1) >= target:
                            pending.discard(j)
                samples.append((time.perf_counter() - t0) * 1000)
        finally:
            admin.close()
            for c in clients:
                c.close()
    raw = _raw_roundtrip(bootstrap, args.rounds)
    for p, label in ((0.5, "p50"), (0.99, "p99")):
        rows.append(
            Row(
                "config propagation (2 workers + 2 gateways)",
                f"activate -> all 4 serving, {label}",
                _q(samples, p),
                "ms",
                _q(raw, p),
                f"one record produce->consume {label}",
                f"{len(samples)} activations, includes the admin write",
            )
        )
        print(_table(rows[-1:]), flush=True)


# -- 4. worker memory and ready time ---------------------------------------------------------------


def _bulk_config(bootstrap: str, prefix: str, workflows: int, channels: int, revisions: int = 1) -> int:
    """Write active workflows (+ channels binding them) straight onto the config topic; returns records."""
    from confluent_kafka import Producer

    from app.config_store.state import proposal_key

    topic = f"{prefix}config"
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    now = "2026-01-01T00:00:00.000Z"
    count = 0

    def put(kind: str, oid: str, rev: int, doc: dict[str, Any]) -> None:
        nonlocal count
        version = {
            **doc,
            "version": 1,
            "status": "active",
            "rollout_percentage": 100,
            "created_at": now,
            "updated_at": now,
        }
        value = {
            "kind": kind,
            "id": oid,
            "op": "activate",
            "expected_revision": rev - 1,
            "revision": rev,
            "actor": "bench",
            "ts": 0,
            "object": {"versions": {"1": version}},
        }
        while True:
            try:
                producer.produce(topic, orjson.dumps(value), key=proposal_key(kind, oid, rev, uuid.uuid4().hex[:16]))
                break
            except BufferError:
                producer.poll(0.05)
        count += 1

    per_channel = max(1, workflows // max(1, channels))
    for rev in range(1, revisions + 1):
        for i in range(workflows):
            put(
                "workflow",
                f"wf{i:05d}",
                rev,
                {
                    "name": f"wf{i}",
                    "condition": True,
                    "tasks": [
                        {
                            "id": "m",
                            "name": "m",
                            "condition": {">": [{"var": "data.n"}, i]},
                            "function": {
                                "name": "map",
                                "input": {"mappings": [{"path": "data.tier", "logic": f"t{i}"}]},
                            },
                        }
                    ],
                },
            )
    for c in range(channels):
        ids = [f"wf{i:05d}" for i in range(c * per_channel, min(workflows, (c + 1) * per_channel))]
        put(
            "channel",
            f"ch{c:04d}",
            1,
            {
                "name": f"ch{c}",
                "channel_type": "sync",
                "protocol": "http",
                "methods": ["POST"],
                "route_pattern": f"/ch{c}",
                "workflow_ids": ids,
            },
        )
    producer.flush(60)
    return count


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _worker_ready(bootstrap: str, prefix: str, logs: Path) -> tuple[float, float]:
    """Start one worker on `prefix`; returns (seconds to /readyz 200, RSS MB once ready)."""
    from bench.faults import spawn, wait_ready

    port = _free_port()
    t0 = time.monotonic()
    p = spawn(
        f"worker-{prefix}",
        [sys.executable, "-m", "app.cli", "worker", "--instance-id", "bm", "--metrics-port", str(port)],
        _env(bootstrap, prefix),
        logs,
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}/readyz", p, 600)
        ready = time.monotonic() - t0
        return ready, _rss_mb(p.popen.pid)
    finally:
        p.stop()


def bench_memory(bootstrap: str, logs: Path, args: argparse.Namespace, rows: list[Row]) -> None:
    empty = f"bench{uuid.uuid4().hex[:6]}."
    _apply(bootstrap, empty)
    base_ready, base_rss = _worker_ready(bootstrap, empty, logs)
    big = f"bench{uuid.uuid4().hex[:6]}."
    _apply(bootstrap, big)
    _bulk_config(bootstrap, big, args.workflows, args.workflows // 10)
    _ready, rss = _worker_ready(bootstrap, big, logs)
    rows.append(
        Row(
            "worker footprint",
            f"RSS with {args.workflows:,} active workflows",
            rss,
            "MB",
            base_rss,
            "RSS with an empty config",
            f"{args.workflows // 10} channels bind them",
        )
    )
    many = f"bench{uuid.uuid4().hex[:6]}."
    _apply(bootstrap, many)
    records = _bulk_config(bootstrap, many, args.records // 2, 0, revisions=2)
    ready, _ = _worker_ready(bootstrap, many, logs)
    rows.append(
        Row(
            "worker footprint",
            f"ready time with {records:,} config records",
            ready,
            "s",
            base_ready,
            "ready time with an empty config",
            "process start -> /readyz 200",
        )
    )
    print(_table(rows[-2:]), flush=True)


# -- main ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0, help="duration of each HTTP load run")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 10, 50, 100])
    parser.add_argument("--messages", type=int, default=50_000, help="records of the async throughput runs")
    parser.add_argument("--rounds", type=int, default=20, help="activations measured for propagation")
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--records", type=int, default=10_000)
    parser.add_argument("--only", default="http,worker,propagation,memory")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json")
    args = parser.parse_args(argv)
    from app.kafka.broker import EmbeddedBroker

    only = set(args.only.split(","))
    logs = Path(tempfile.mkdtemp(prefix="quasar-bench-all-"))
    rows: list[Row] = []
    failures: dict[str, str] = {}
    steps: list[tuple[str, Callable[[str], None]]] = [
        ("http", lambda b: bench_http(b, logs, args, rows)),
        ("worker", lambda b: bench_worker(b, args, rows)),
        ("propagation", lambda b: bench_propagation(b, logs, args, rows)),
        ("memory", lambda b: bench_memory(b, logs, args, rows)),
    ]
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        bootstrap = os.environ.get("QUASAR_KAFKA_BOOTSTRAP") or stack.enter_context(EmbeddedBroker()).bootstrap
        for name, step in steps:
            if name not in only:
                continue
            print(f"== {name}", flush=True)
            try:
                step(bootstrap)
            except Exception as exc:  # report and go on: one broken part must not hide the others
                failures[name] = f"{type(exc).__name__}: {exc}"[:2000]
                print(f"{name} failed: {failures[name]}", file=sys.stderr, flush=True)
    print()
    print(_table(rows))
    out = {
        "run_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "seconds": round(time.monotonic() - started, 1),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "machine": {"cpus": os.cpu_count(), "load_generator": "hey" if shutil.which("hey") else "httpx"},
        "rows": [{**asdict(r), "ratio": round(r.ratio, 4)} for r in rows],
        "failures": failures,
        "table": _table(rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"\nwritten {args.out} (logs in {logs})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
