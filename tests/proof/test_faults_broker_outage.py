"""Broker killed under running processes: `/readyz` and `/health` of `quasar worker` and `quasar gateway`
turn unready within 10 s, and ready again within 10 s of the broker's return, with no restart.

The broker is this test's own (a fixed port, so it comes back on the same address). It keeps its data in
memory, so the returning broker is empty: the test re-creates the topics as an operator's `quasar topics
apply` would (real Kafka keeps them; on Tansu the processes' own reconnecting consumers may re-create
some first, with Tansu's default partition count, hence no strict check) and measures from the moment
the cluster answers again.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx

from app.kafka.admin import create_admin
from app.kafka.broker import EmbeddedBroker, free_port
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from bench.faults import _apply_topics, _procs, _settings, spawn_gateway, spawn_worker, wait_ready
from tests.fixtures.polling import poll

LIMIT_S = 10.0


def _status(url: str) -> int:
    try:
        return httpx.get(url, timeout=2.0).status_code
    except httpx.HTTPError:
        return 0


class _FirstSeen(dict[str, float]):
    """name -> seconds after `since` at which `urls[name]` first answered `status`."""

    def __init__(self, urls: dict[str, str], status: int, *, since: float) -> None:
        super().__init__()
        self.urls, self.status, self.since = urls, status, since

    def complete(self) -> bool:
        for name, url in self.urls.items():
            if name not in self and _status(url) == self.status:
                self[name] = time.monotonic() - self.since
        return len(self) == len(self.urls)


def test_readyz_follows_the_broker_down_and_back_up(tmp_path: Path) -> None:
    port = free_port()
    settings = _settings(f"127.0.0.1:{port}")
    broker = EmbeddedBroker(port=port).start()
    try:
        _apply_topics(settings)
        with _procs() as procs:
            worker, wport = spawn_worker(settings, "outage-w", tmp_path)
            gateway, base = spawn_gateway(settings, "outage-gw", tmp_path)
            procs += [worker, gateway]
            readyz = {"worker": f"http://127.0.0.1:{wport}/readyz", "gateway": f"{base}/readyz"}
            health = {"worker": f"http://127.0.0.1:{wport}/health", "gateway": f"{base}/health"}
            wait_ready(readyz["worker"], worker, 90)
            wait_ready(readyz["gateway"], gateway, 90)
            assert all(_status(u) == 200 for u in health.values())

            assert broker.pid is not None
            os.kill(broker.pid, signal.SIGKILL)  # an outage, not a shutdown
            killed = time.monotonic()
            down_after = _FirstSeen(readyz, 503, since=killed)

            poll(down_after.complete, within=30, what="both processes unready after the broker died", every=0.2)
            assert all(_status(u) == 503 for u in health.values())
            body = httpx.get(health["gateway"], timeout=2).json()
            assert body["components"]["broker"].startswith("unreachable"), body
            assert worker.alive and gateway.alive, worker.tail() + gateway.tail()

            broker.stop()
            broker = EmbeddedBroker(port=port).start()  # returns once it answers metadata requests
            back = time.monotonic()
            apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings), strict=False)
            up_after = _FirstSeen(readyz, 200, since=back)

            poll(up_after.complete, within=60, what="both processes ready after the broker came back", every=0.2)
            print(f"unready after kill: {down_after}; ready after return: {up_after}")
            for name in readyz:
                assert down_after[name] <= LIMIT_S, (name, down_after)
                assert up_after[name] <= LIMIT_S, (name, up_after)
            assert worker.alive and gateway.alive
    finally:
        broker.stop()
