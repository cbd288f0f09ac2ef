"""Durable-flow measurements: `python -m bench.flows [--timers 1000] [--delay 5] [--failover-delay 60]`.

- timers: N instances each waiting on a delay that falls due at about the same moment, on two
  `quasar flows run` processes; lateness = the instant the timer's event was applied minus its due
  time, read from every instance's timeline. The requirement is p99 <= 1 s.
- failover: one instance waits on a long delay; the runner that owns it is killed with SIGKILL; the
  survivor must fire the timer exactly once.

Uses QUASAR_KAFKA_BOOTSTRAP when set, else an embedded Tansu broker. Writes bench/results/flows.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from app.config_store import Activate, ConfigReader, ConfigWriter, Create
from app.flow_runtime.client import FlowClient
from app.flow_runtime.records import partition_for
from app.flow_runtime.view import InstanceView
from app.flows.instance import StartEvent
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.broker import EmbeddedBroker
from app.kafka.config import producer_config
from app.kafka.names import TopicNames
from app.kafka.producer import AsyncProducer
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings

RESULTS = Path(__file__).parent / "results" / "flows.json"


def _settings(bootstrap: str) -> Settings:
    return Settings(
        kafka_bootstrap=bootstrap,
        topic_prefix=f"b{uuid.uuid4().hex[:8]}.",
        fetch_wait_max_ms=10,
        session_timeout_ms=1000 if not os.environ.get("QUASAR_KAFKA_BOOTSTRAP") else 6000,
        instance_id="bench",
    )


class Runner:
    def __init__(self, settings: Settings, name: str, log_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUASAR_")}
        env.update(
            QUASAR_KAFKA_BOOTSTRAP=settings.kafka_bootstrap or "",
            QUASAR_TOPIC_PREFIX=settings.topic_prefix,
            QUASAR_FETCH_WAIT_MAX_MS=str(settings.fetch_wait_max_ms),
            QUASAR_SESSION_TIMEOUT_MS=str(settings.session_timeout_ms),
            QUASAR_WORKER_METRICS_PORT="0",
            QUASAR_INSTANCE_ID=name,
            QUASAR_LOG_FORMAT="console",
        )
        self.log = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "flows", "run"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )

    def owned(self) -> list[int]:
        found = re.findall(r"owning partitions \[([0-9, ]*)\]", self.log.read_text(errors="replace"))
        return [int(p) for p in found[-1].split(",") if p.strip()] if found else []

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(30)


async def _until(check: Any, within: float, what: str) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        await asyncio.sleep(0.1)
    raise TimeoutError(what)


def _owners(runners: list[Runner], partitions: int) -> dict[int, Runner] | None:
    owners: dict[int, Runner] = {}
    for runner in runners:
        for p in runner.owned():
            if p in owners:
                return None
            owners[p] = runner
    return owners if len(owners) == partitions else None


async def run(bootstrap: str, timers: int, delay: float, failover_delay: float) -> dict[str, Any]:
    settings = _settings(bootstrap)
    names = TopicNames(settings.topic_prefix)
    apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings))
    partitions = topic_partitions(create_admin(settings))[names.flow_events]
    reader = ConfigReader(settings, engine_factory=None, name="bench-flows")
    await reader.start()
    await reader.ready()
    writer = ConfigWriter(reader)
    for flow_id, seconds in (("timer", delay), ("long", failover_delay)):
        doc = {"name": flow_id, "steps": [{"id": "wait", "type": "delay", "delay": {"duration": seconds}}]}
        await writer.apply("flow", flow_id, Create(doc))
        await writer.apply("flow", flow_id, Activate())
    producer = AsyncProducer(producer_config(settings, **{"linger.ms": 2}))
    client = FlowClient(producer, names, partitions)
    view = InstanceView(settings)
    await view.start()
    log_dir = Path(tempfile.mkdtemp(prefix="bench-flows-"))
    runners = [Runner(settings, f"runner-{i}", log_dir) for i in range(2)]
    result: dict[str, Any] = {"partitions": partitions, "fetch_wait_max_ms": settings.fetch_wait_max_ms}
    try:
        owners = await _until(lambda: _owners(runners, partitions), 120, "runners own partitions")
        # -- timers ------------------------------------------------------------------------------
        started = time.time()
        await asyncio.gather(
            *(client.send(StartEvent(instance_id=f"t-{n}", flow_id="timer", flow_version=1)) for n in range(timers))
        )
        send_seconds = time.time() - started
        await _until(
            lambda: len(view.find(flow_id="timer", status="completed")) == timers, delay + 120, "all timers fired"
        )
        lateness = []
        fired_counts = []
        for state in view.find(flow_id="timer"):
            fired = [e for e in state.timeline if e["event"] == "timer_fired"]
            fired_counts.append(len(fired))
            lateness.append(fired[0]["at"] - fired[0]["due"])
        lateness.sort()
        result["timers"] = {
            "instances": timers,
            "delay_s": delay,
            "start_all_s": round(send_seconds, 3),
            "fired_once": sum(1 for c in fired_counts if c == 1),
            "lateness_p50_s": round(statistics.median(lateness), 4),
            "lateness_p99_s": round(lateness[int(0.99 * (len(lateness) - 1))], 4),
            "lateness_max_s": round(lateness[-1], 4),
        }
        print(json.dumps(result["timers"]), flush=True)
        # -- failover during a long delay ----------------------------------------------------------
        await client.send(StartEvent(instance_id="victim", flow_id="long", flow_version=1))
        waiting = await _until(lambda: (s := view.get("victim")) and s.status == "waiting" and s, 60, "victim waits")
        due = waiting.timers["delay:wait"]
        owner = owners[partition_for("victim", partitions)]
        killed_at = time.time()
        owner.stop(signal.SIGKILL)
        done = await _until(
            lambda: (s := view.get("victim")) and s.status == "completed" and s, failover_delay + 120, "victim done"
        )
        fired = [e for e in done.timeline if e["event"] == "timer_fired"]
        result["failover"] = {
            "delay_s": failover_delay,
            "killed_owner_s_before_due": round(due - killed_at, 3),
            "timer_fired_events": len(fired),
            "lateness_s": round(fired[0]["at"] - due, 4),
        }
        print(json.dumps(result["failover"]), flush=True)
    finally:
        for runner in runners:
            runner.stop()
        await view.stop()
        await producer.close()
        await reader.stop()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--timers", type=int, default=1000)
    parser.add_argument("--delay", type=float, default=5.0)
    parser.add_argument("--failover-delay", type=float, default=60.0)
    args = parser.parse_args()
    external = os.environ.get("QUASAR_KAFKA_BOOTSTRAP")
    if external:
        result = asyncio.run(run(external, args.timers, args.delay, args.failover_delay))
    else:
        with EmbeddedBroker() as broker:
            result = asyncio.run(run(broker.bootstrap, args.timers, args.delay, args.failover_delay))
    result["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
