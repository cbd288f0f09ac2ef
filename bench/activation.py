"""Consumption isolation: activating a channel while another one is under load.

A worker and a gateway (real processes) on their own broker; closed-loop sync load on channel `busy`;
after a steady phase, channel `newcomer` is created and activated through the admin API, which makes the
worker subscribe to one more topic (a group rebalance). Reported: `busy`'s latency percentiles in the
steady phase and in the phase after the activation, and their ratio. Run once with the worker's default
assignor (cooperative-sticky) and once with `--assignor range` (the eager assignor that stopped every
channel for the whole rebalance: a 2.05 s stall was measured before issue 13).

    python -m bench.activation [--assignor range] [--steady 6] [--after 8]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from bench.faults import (
    _admin_setup,
    _apply_topics,
    _log_dir,
    _procs,
    _settings,
    _sync_channel_doc,
    quasar_env,
    spawn,
    wait_ready,
)

WORKFLOW: dict[str, Any] = {
    "workflow_id": "activation-wf",
    "name": "activation-wf",
    "tasks": [
        {
            "id": "mark",
            "name": "mark",
            "function": {"name": "map", "input": {"mappings": [{"path": "data.done", "logic": True}]}},
        }
    ],
}


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class _Load(threading.Thread):
    """One closed-loop client: a sync call, its latency, the next call."""

    def __init__(self, base: str, stop: threading.Event) -> None:
        super().__init__(daemon=True)
        self.base = base
        self.stop_event = stop
        self.samples: list[tuple[float, float, int]] = []  # (sent at, seconds, status)

    def run(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as http:
            while not self.stop_event.is_set():
                sent = time.monotonic()
                try:
                    status = http.post("/api/v1/data/busy", json={"data": {"t": sent}}).status_code
                except httpx.HTTPError:
                    status = 0
                self.samples.append((sent, time.monotonic() - sent, status))


def activation_isolation(
    *,
    assignor: str | None = None,
    steady_s: float = 6.0,
    after_s: float = 8.0,
    clients: int = 4,
    log_dir: Path | None = None,
) -> dict[str, Any]:
    from app.kafka.broker import EmbeddedBroker, free_port

    logs = _log_dir(log_dir, f"activation-{assignor or 'default'}")
    with EmbeddedBroker() as broker, _procs() as procs:
        settings = _settings(broker.bootstrap, session_timeout_ms=2000, default_partitions=2)
        _apply_topics(settings, channels=("busy", "newcomer"))
        extra = {"QUASAR_KAFKA__PARTITION_ASSIGNMENT_STRATEGY": assignor} if assignor else {}
        wport, gport = free_port(), free_port()
        worker = spawn(
            "worker",
            [sys.executable, "-m", "app.cli", "worker", "--instance-id", "act-w", "--metrics-port", str(wport)],
            quasar_env(settings, **extra),
            logs,
        )
        gateway = spawn(
            "gateway",
            [sys.executable, "-m", "app.cli", "gateway", "--instance-id", "act-gw", "--port", str(gport)],
            quasar_env(settings),
            logs,
        )
        procs += [worker, gateway]
        base = f"http://127.0.0.1:{gport}"
        wait_ready(f"http://127.0.0.1:{wport}/readyz", worker, 90)
        wait_ready(f"{base}/readyz", gateway, 90)
        _admin_setup(base, [WORKFLOW], [_sync_channel_doc("busy", "activation-wf")])
        # The first call waits for the worker's subscription to `busy` (its first join).
        deadline = time.monotonic() + 60
        while httpx.post(f"{base}/api/v1/data/busy", json={"data": {}}, timeout=30).status_code != 200:
            if time.monotonic() > deadline:
                raise TimeoutError("channel busy never answered")
        stop = threading.Event()
        loads = [_Load(base, stop) for _ in range(clients)]
        for load in loads:
            load.start()
        time.sleep(1.0 + steady_s)  # 1 s warm-up, then the steady window (a fixed-length phase)
        activated = time.monotonic()
        _admin_setup(base, [], [_sync_channel_doc("newcomer", "activation-wf")])
        activation_call_s = time.monotonic() - activated
        time.sleep(after_s)  # the phase after the activation, also fixed-length
        stop.set()
        for load in loads:
            load.join(35)
        newcomer = httpx.post(f"{base}/api/v1/data/newcomer", json={"data": {}}, timeout=30).status_code
        samples = [s for load in loads for s in load.samples]
        started = min(s[0] for s in samples)
        steady = [d for t, d, st in samples if started + 1.0 <= t < activated and st == 200]
        after = [d for t, d, st in samples if activated <= t < activated + after_s and st == 200]
        failed = [st for t, _d, st in samples if t >= started + 1.0 and st != 200]
        slowest = sorted(((d, t - activated) for t, d, st in samples if t >= started + 1.0), reverse=True)[:6]
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": broker.bootstrap})
        topics = sorted(admin.list_topics(timeout=10).topics)
        groups = sorted(g.group_id for g in admin.list_consumer_groups(request_timeout=10).result().valid)
        result = {
            "scenario": "activate a channel while another is under load",
            "assignor": assignor or "cooperative-sticky (default)",
            "clients": clients,
            "steady": _summary(steady),
            "after_activation": _summary(after),
            "p99_ratio": round(_percentile(after, 0.99) / _percentile(steady, 0.99), 2),
            "max_after_s": round(max(after), 3) if after else None,
            "max_steady_s": round(max(steady), 3) if steady else None,
            # (latency s, sent at s relative to the activation): where the slow calls sit.
            "slowest": [(round(d, 3), round(at, 2)) for d, at in slowest],
            "activation_call_s": round(activation_call_s, 3),
            "failed_calls": len(failed),
            "newcomer_status": newcomer,
            "undeclared_internal_topics": [t for t in topics if "__assignor" in t or "worker-app" in t],
            "groups": groups,
            "logs": str(logs),
        }
        with contextlib.suppress(Exception):
            worker.stop()
    return result


def _summary(values: list[float]) -> dict[str, Any]:
    return {
        "n": len(values),
        "p50_ms": round(1000 * statistics.median(values), 1) if values else None,
        "p99_ms": round(1000 * _percentile(values, 0.99), 1) if values else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--assignor", default=None, help="partition.assignment.strategy (default: the worker's)")
    parser.add_argument("--steady", type=float, default=6.0)
    parser.add_argument("--after", type=float, default=8.0)
    args = parser.parse_args(argv)
    print(json.dumps(activation_isolation(assignor=args.assignor, steady_s=args.steady, after_s=args.after), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
