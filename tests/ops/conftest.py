"""The ops stack for tests: `quasar worker` and `quasar gateway` as real processes on the test broker,
and a real Prometheus (Debian package `prometheus`) scraping both every second."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.kafka.admin import create_admin
from app.kafka.broker import free_port
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings
from tests.fixtures.kafka import make_test_settings
from tests.fixtures.polling import poll
from tests.ops._promql import ALERTS

__all__ = ["OpsStack", "poll"]


@dataclass
class OpsStack:
    settings: Settings
    gateway_url: str
    worker_url: str
    prometheus_url: str
    logs: Path
    procs: dict[str, subprocess.Popen[bytes]]

    def alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                raise AssertionError(f"{name} exited with {proc.returncode}: {self.log(name)[-3000:]}")

    def log(self, name: str) -> str:
        path = self.logs / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _env(settings: Settings, instance: str) -> dict[str, str]:
    return {
        **os.environ,
        "QUASAR_KAFKA_BOOTSTRAP": str(settings.kafka_bootstrap),
        "QUASAR_TOPIC_PREFIX": settings.topic_prefix,
        "QUASAR_FETCH_WAIT_MAX_MS": str(settings.fetch_wait_max_ms),
        "QUASAR_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
        "QUASAR_DEFAULT_PARTITIONS": str(settings.default_partitions),
        "QUASAR_INSTANCE_ID": instance,
        "QUASAR_LOG_FORMAT": "json",
        "QUASAR_LOG_LEVEL": "info",
    }


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def prometheus_config(targets: dict[str, str], rules: Path) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s", "scrape_timeout": "900ms"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": job, "metrics_path": "/metrics", "static_configs": [{"targets": [target]}]}
            for job, target in targets.items()
        ],
    }


@pytest.fixture(scope="module")
def ops_stack(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpsStack]:
    binary = shutil.which("prometheus")
    assert binary, "prometheus missing: .ci/run installs the Debian package `prometheus`"
    tmp = tmp_path_factory.mktemp("ops")
    settings = make_test_settings(kafka_bootstrap, instance_id="ops-gw")
    apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings))
    gw_port, worker_port, prom_port = free_port(), free_port(), free_port()
    procs: dict[str, subprocess.Popen[bytes]] = {}
    try:
        procs["worker"] = _spawn(
            [sys.executable, "-m", "app.cli", "worker", "--metrics-port", str(worker_port)],
            _env(settings, "ops-worker"),
            tmp / "worker.log",
        )
        procs["gateway"] = _spawn(
            [sys.executable, "-m", "app.cli", "gateway", "--host", "127.0.0.1", "--port", str(gw_port)],
            _env(settings, "ops-gw"),
            tmp / "gateway.log",
        )
        config = tmp / "prometheus.yml"
        config.write_text(
            yaml.safe_dump(
                prometheus_config(
                    {"quasar-gateway": f"127.0.0.1:{gw_port}", "quasar-worker": f"127.0.0.1:{worker_port}"},
                    ALERTS,
                )
            )
        )
        procs["prometheus"] = _spawn(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={tmp / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{prom_port}",
                "--log.level=warn",
            ],
            dict(os.environ),
            tmp / "prometheus.log",
        )
        stack = OpsStack(
            settings,
            f"http://127.0.0.1:{gw_port}",
            f"http://127.0.0.1:{worker_port}",
            f"http://127.0.0.1:{prom_port}",
            tmp,
            procs,
        )

        def ready(url: str) -> bool:
            stack.alive()
            return httpx.get(f"{url}/readyz", timeout=2).status_code == 200

        poll(lambda: ready(stack.gateway_url), within=60, what="gateway ready")
        poll(lambda: ready(stack.worker_url), within=60, what="worker ready")
        poll(
            lambda: stack.alive() or httpx.get(f"{stack.prometheus_url}/-/ready", timeout=2).is_success,
            within=30,
            what="prometheus ready",
        )
        yield stack
    finally:
        for proc in procs.values():
            _stop(proc)
