"""Idle cost of flows on the embedded broker: `python -m bench.flows_idle [--seconds 20] [--interval-ms 0 1000]`.

For each `QUASAR_FLOWS_IDLE_FETCH_INTERVAL_MS` value, on a fresh embedded Tansu with dev's 10 ms fetch wait:

- `worker`: `quasar worker` with one active flow (its flow runner running, nothing to do);
- `gateway`: `quasar gateway` after one `GET /api/v1/instances` (its instance view running);
- `baseline`: `quasar worker` without flows (no runner).

After 15 s to settle, the CPU time of the Quasar process and of the broker over `--seconds`, as % of one
core (from /proc: CPU time, not wall time, so the box's load matters less). Ratios against `off` are
printed; the absolute numbers depend on the box.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from typing import Any

import httpx

from app.config_store import Activate, ConfigReader, ConfigWriter, Create
from app.kafka.admin import create_admin
from app.kafka.broker import EmbeddedBroker, free_port
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings

FLOW = {"flow_id": "idle", "name": "Idle", "steps": [{"id": "nap", "type": "delay", "delay": {"duration": "1d"}}]}
SETTLE_S = 15.0


def _ticks(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def _tree_ticks(pid: int) -> int:
    total = _ticks(pid)
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            children = f.read().split()
    except OSError:
        return total
    return total + sum(_tree_ticks(int(c)) for c in children)


async def _add_flow(settings: Settings) -> None:
    reader = ConfigReader(settings, name="bench-idle-admin", engine_factory=None)
    await reader.start()
    await reader.ready()
    writer = ConfigWriter(reader)
    await writer.apply("flow", "idle", Create(dict(FLOW)))
    await writer.apply("flow", "idle", Activate())
    await reader.stop()


def measure(case: str, interval_ms: int, seconds: float) -> dict[str, Any]:
    with EmbeddedBroker() as broker:
        settings = Settings(kafka_bootstrap=broker.bootstrap, topic_prefix="idle.", fetch_wait_max_ms=10)
        apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings))
        if case != "baseline":
            asyncio.run(_add_flow(settings))
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUASAR_")}
        env.update(
            QUASAR_KAFKA_BOOTSTRAP=broker.bootstrap,
            QUASAR_TOPIC_PREFIX="idle.",
            QUASAR_FETCH_WAIT_MAX_MS="10",
            QUASAR_SESSION_TIMEOUT_MS="3000",
            QUASAR_WORKER_METRICS_PORT="0",
            QUASAR_LOG_LEVEL="warning",
            QUASAR_FLOWS_IDLE_FETCH_INTERVAL_MS=str(interval_ms),
        )
        port = free_port()
        args = ["gateway", "--port", str(port)] if case == "gateway" else ["worker"]
        quiet = subprocess.DEVNULL
        proc = subprocess.Popen([sys.executable, "-m", "app.cli", *args], env=env, stdout=quiet, stderr=quiet)
        try:
            if case == "gateway":
                deadline = time.monotonic() + 120
                while time.monotonic() < deadline:
                    try:
                        if httpx.get(f"http://127.0.0.1:{port}/api/v1/instances", timeout=60).status_code == 200:
                            break
                    except httpx.HTTPError:
                        time.sleep(0.2)
            time.sleep(SETTLE_S)
            broker_pid = broker.pid
            assert broker_pid is not None
            before, broker_before, start = _tree_ticks(proc.pid), _ticks(broker_pid), time.monotonic()
            time.sleep(seconds)
            after, broker_after = _tree_ticks(proc.pid), _ticks(broker_pid)
            elapsed = time.monotonic() - start
        finally:
            proc.terminate()
            proc.wait(30)
    hz = os.sysconf("SC_CLK_TCK")
    return {
        "quasar": round((after - before) / hz / elapsed * 100, 1),
        "broker": round((broker_after - broker_before) / hz / elapsed * 100, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--interval-ms", type=int, nargs="+", default=[0, 1000])
    args = parser.parse_args()
    base = measure("baseline", 0, args.seconds)
    print(f"baseline (worker, no flows): quasar {base['quasar']}% broker {base['broker']}% of a core")
    for case in ("worker", "gateway"):
        results = {ms: measure(case, ms, args.seconds) for ms in args.interval_ms}
        off = results.get(0)
        for ms, r in results.items():
            ratio = f" (broker {r['broker'] / off['broker']:.2f}x of off)" if off and off["broker"] else ""
            print(f"{case} interval={ms} ms: quasar {r['quasar']}% broker {r['broker']}%{ratio}")


if __name__ == "__main__":
    main()
