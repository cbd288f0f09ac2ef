"""Gateway benchmark: `python -m bench.gateway`.

Starts (as separate processes, like production) an embedded Tansu broker (unless QUASAR_KAFKA_BOOTSTRAP
is set), one `quasar worker`-equivalent process (`ChannelWorker`), one gateway (`quasar gateway`, uvicorn
+ uvloop + httptools), loads Orion's benchmark workloads (bench/workloads) through the admin API,
checks one response per workload, then runs a real load generator (`hey`, else an async httpx client)
at concurrency 50 against `POST /api/v1/data/<channel>` and against a bare uvicorn JSON echo in the same
run. Prints req/s, mean, p50, p99 and error count per scenario.

Everything shares this box's cores: broker, worker, gateway and the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench import loadgen
from bench.loadgen import Load, load

__all__ = ["ScenarioResult", "main"]

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class ScenarioResult(Load):
    """One load run, named, with a note (each process's CPU per request)."""

    name: str = ""
    note: str = ""


# -- child process roles ---------------------------------------------------------------------------


def _run_worker() -> None:
    from app.settings import Settings
    from app.worker.runner import ChannelWorker

    async def run() -> None:
        worker = ChannelWorker(Settings())
        await worker.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        print("WORKER READY", flush=True)
        await stop.wait()
        await worker.stop()

    import uvloop

    uvloop.run(run())


async def _echo_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """The bare baseline: read the JSON body, parse it, answer it (no framework, no Kafka)."""
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    out = orjson.dumps({"status": "ok", "data": orjson.loads(body or b"{}").get("data"), "errors": []})
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})


def _run_echo(port: int) -> None:
    import uvicorn

    uvicorn.run(
        _echo_app,
        host="127.0.0.1",
        port=port,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
        lifespan="off",
    )


# -- orchestration ---------------------------------------------------------------------------------


def _free_port() -> int:
    from app.kafka.broker import free_port

    return free_port()


@contextlib.contextmanager
def _spawn(args: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def _wait_http(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} process exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        # A child process is starting; there is no event to wait on but its port.
        time.sleep(0.1)
    raise TimeoutError(f"{url} not ready within {timeout}s:\n{log.read_text()[-3000:]}")


def _wait_line(log: Path, needle: str, proc: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in log.read_text(errors="replace"):
            return
        if proc.poll() is not None:
            raise RuntimeError(f"process exited:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    raise TimeoutError(f"'{needle}' not seen within {timeout}s:\n{log.read_text()[-3000:]}")


def _load_workloads(http: httpx.Client, workloads: list[Any]) -> dict[str, str]:
    """Create + activate each workload's workflows and one channel binding them; returns name -> channel."""
    channels: dict[str, str] = {}
    for w in workloads:
        ids = []
        for doc in w.workflow_docs():
            r = http.post("/api/v1/admin/workflows", json=doc)
            r.raise_for_status()
            wid = r.json()["data"]["workflow_id"]
            http.patch(f"/api/v1/admin/workflows/{wid}/status", json={"status": "active"}).raise_for_status()
            ids.append(wid)
        # Orion's fixtures put simple and 12-workflow on one "bench" channel in turn; here each gets its own.
        channel = w.channel if w.name == "complex" else f"{w.channel}-{w.name}"
        r = http.post(
            "/api/v1/admin/channels",
            json={
                "channel_id": channel,
                "name": channel,
                "channel_type": "sync",
                "protocol": "http",
                "methods": ["POST"],
                "route_pattern": f"/{channel}",
                "workflow_ids": ids,
            },
        )
        r.raise_for_status()
        http.patch(f"/api/v1/admin/channels/{channel}/status", json={"status": "active"}).raise_for_status()
        channels[w.name] = channel
    return channels


def _check_response(http: httpx.Client, channel: str, workload: Any) -> None:
    r = http.post(f"/api/v1/data/{channel}", content=workload.body(), headers={"content-type": "application/json"})
    if r.status_code != 200:
        raise RuntimeError(f"{workload.name}: {r.status_code} {r.text}")
    problem = workload.expect.data_mismatch(r.json()["data"])
    if problem:
        raise RuntimeError(f"{workload.name}: wrong response: {problem}")


def _load(url: str, body_file: Path, seconds: float, concurrency: int) -> ScenarioResult:
    return ScenarioResult(**dataclasses.asdict(load(url, seconds, concurrency, body_file)), name=url)


def _cpu_seconds(pid: int | None) -> float:
    """User + system CPU time of a process so far (Linux /proc), 0 when unknown."""
    if pid is None:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _table(rows: list[ScenarioResult], concurrency: int | str, tool: str) -> str:
    lines = [
        f"load generator: {tool}, concurrency {concurrency}",
        f"{'scenario':<40} {'req/s':>9} {'mean ms':>9} {'p50 ms':>9} {'p99 ms':>9} {'errors':>8} {'requests':>9}",
    ]
    for r in rows:
        lines.append(
            f"{r.name:<40} {r.rps:>9,.0f} {r.mean_ms:>9.1f} {r.p50_ms:>9.1f} {r.p99_ms:>9.1f}"
            f" {r.errors:>8} {r.total:>9}" + (f"  {r.note}" if r.note else "")
        )
    return "\n".join(lines)


@dataclass
class Stack:
    """The running benchmark processes: broker (pid when embedded), worker, gateway(s), echo."""

    base: str
    echo_url: str
    channels: dict[str, str]
    pids: dict[str, int | None]
    procs: list[tuple[subprocess.Popen[bytes], Path]]
    logs: Path
    echo_pid: int


@contextlib.contextmanager
def stack(args: argparse.Namespace, workloads: list[Any]) -> Iterator[Stack]:
    """Start broker, worker, gateway and echo; load the workloads; yield; stop everything."""
    from app.kafka.admin import create_admin
    from app.kafka.broker import EmbeddedBroker
    from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
    from app.settings import Settings

    logs = Path(tempfile.mkdtemp(prefix="quasar-bench-gw-"))
    with contextlib.ExitStack() as es:
        bootstrap = os.environ.get("QUASAR_KAFKA_BOOTSTRAP")
        broker_pid = None
        if not bootstrap:
            broker = es.enter_context(EmbeddedBroker())
            bootstrap, broker_pid = broker.bootstrap, broker.pid
        prefix = f"bench{uuid.uuid4().hex[:6]}."
        env = {
            **os.environ,
            "QUASAR_KAFKA_BOOTSTRAP": bootstrap,
            "QUASAR_TOPIC_PREFIX": prefix,
            "QUASAR_FETCH_WAIT_MAX_MS": str(args.fetch_wait_ms),
            "QUASAR_SESSION_TIMEOUT_MS": "3000",
            "QUASAR_LOG_LEVEL": "warning",
            "QUASAR_WORKER_METRICS_PORT": str(_free_port()),
        }
        settings = Settings(kafka_bootstrap=bootstrap, topic_prefix=prefix)
        apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings))

        worker_log = logs / "worker.log"
        worker = es.enter_context(
            _spawn(
                [sys.executable, "-m", "bench.gateway", "--role", "worker"],
                {**env, "QUASAR_INSTANCE_ID": "bench-worker"},
                worker_log,
            )
        )
        _wait_line(worker_log, "WORKER READY", worker)
        port = _free_port()
        gw_log = logs / "gateway.log"
        gw_args = [
            sys.executable,
            "-m",
            "app.cli",
            "gateway",
            "--port",
            str(port),
            "--instance-id",
            "bench-gw",
        ]
        gateway = es.enter_context(_spawn(gw_args, env, gw_log))
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/readyz", gateway, gw_log)
        echo_port = _free_port()
        echo_log = logs / "echo.log"
        echo = es.enter_context(
            _spawn(
                [sys.executable, "-m", "bench.gateway", "--role", "echo", "--port", str(echo_port)],
                env,
                echo_log,
            )
        )
        echo_url = f"http://127.0.0.1:{echo_port}/"
        _wait_http(echo_url, echo, echo_log)

        with httpx.Client(base_url=base, timeout=30) as http:
            channels = _load_workloads(http, workloads)
            for w in workloads:
                _check_response(http, channels[w.name], w)
        print(f"broker {bootstrap}, gateway {base}, echo {echo_url}, logs in {logs}", flush=True)
        pids: dict[str, int | None] = {"gateway": gateway.pid, "worker": worker.pid, "broker": broker_pid}
        yield Stack(base, echo_url, channels, pids, [(worker, worker_log), (gateway, gw_log)], logs, echo.pid)


def _cpu_of(pids: dict[str, int | None]) -> dict[str, float]:
    return {k: _cpu_seconds(pid) for k, pid in pids.items()}


def idle_cpu(pids: dict[str, int | None], seconds: float = 3.0) -> str:
    """Each process's CPU share with no traffic: the fixed cost of polling (fetch waits, timers)."""
    before = _cpu_of(pids)
    t0 = time.monotonic()
    # Measuring an idle interval: nothing to wait for but the clock.
    time.sleep(seconds)
    elapsed = time.monotonic() - t0
    after = _cpu_of(pids)
    return "idle cpu % " + " ".join(f"{k}={(after[k] - before[k]) * 100 / elapsed:.1f}" for k in pids)


def measure(
    url: str, body: Path, seconds: float, concurrency: int, pids: dict[str, int | None], name: str
) -> ScenarioResult:
    """Warm up, then one measured load run with each process's CPU per request."""
    _load(url, body, min(2.0, seconds), concurrency)  # warm-up
    before = _cpu_of(pids)
    result = _load(url, body, seconds, concurrency)
    result.name = name
    if result.total:
        after = _cpu_of(pids)
        # CPU cost per request of each process: tells which one bounds throughput on a busy box.
        result.note = "cpu ms/req " + " ".join(
            f"{k}={(after[k] - before[k]) * 1000 / result.total:.2f}" for k in pids if pids[k] is not None
        )
    return result


def run(args: argparse.Namespace) -> list[ScenarioResult]:
    from bench.workloads import load_workloads

    workloads = [w for w in load_workloads() if w.name in args.scenarios]
    tool = loadgen.tool()
    rows: list[ScenarioResult] = []
    with stack(args, workloads) as st:
        print(idle_cpu(st.pids), flush=True)
        if args.hold:
            print(f"holding for {args.hold:.0f}s", flush=True)
            time.sleep(args.hold)  # interactive profiling: the caller drives load meanwhile
            return rows
        simple_body = next((w.payload_file for w in workloads), None)
        for concurrency in args.concurrency:
            if simple_body is not None:
                echo_pids: dict[str, int | None] = {"echo": st.echo_pid}
                r = measure(st.echo_url, simple_body, args.seconds, concurrency, echo_pids, "bare uvicorn JSON echo")
                r.name += f" c={concurrency}"
                rows.append(r)
            for w in workloads:
                url = f"{st.base}/api/v1/data/{st.channels[w.name]}"
                name = f"gateway: {w.title} c={concurrency}"
                result = measure(url, w.payload_file, args.seconds, concurrency, st.pids, name)
                rows.append(result)
                print(_table([result], concurrency, tool), flush=True)
        for proc, log in st.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a process died during the run:\n{log.read_text()[-3000:]}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="Duration of each measured run.")
    parser.add_argument(
        "--concurrency", "-c", type=int, nargs="+", default=[50], help="One or more concurrency levels."
    )
    parser.add_argument("--hold", type=float, default=0.0, help="Start the stack and keep it up N seconds.")
    parser.add_argument("--fetch-wait-ms", type=int, default=10, help="fetch.wait.max.ms of every consumer.")
    parser.add_argument("--scenarios", nargs="+", default=["simple", "complex", "multi"])
    parser.add_argument("--role", choices=["bench", "worker", "echo"], default="bench", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.role == "worker":
        _run_worker()
        return 0
    if args.role == "echo":
        _run_echo(args.port)
        return 0
    rows = run(args)
    print()
    if rows:
        tool = "hey" if loadgen.tool() == "hey" else "httpx (hey not installed)"
        print(_table(rows, ",".join(map(str, args.concurrency)), tool))
    return 0


if __name__ == "__main__":
    sys.exit(main())
