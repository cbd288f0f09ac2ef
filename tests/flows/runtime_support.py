"""A flow runtime for tests: fixed topics on a fresh prefix, a config writer, runners, a view and a client."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.config_store import Activate, ConfigReader, ConfigWriter, Create
from app.flow_runtime.client import FlowClient
from app.flow_runtime.runner import FlowRunner
from app.flow_runtime.view import InstanceView
from app.flows.instance import InstanceState, StartEvent
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.config import producer_config
from app.kafka.names import TopicNames
from app.kafka.producer import AsyncProducer
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings

__all__ = ["FlowEnv", "RunnerProcess", "until"]


async def until(check: Any, *, within: float, what: str) -> Any:
    """Re-check a condition on another process (a log file) without blocking the loop the runners share."""
    import asyncio
    import time

    deadline = time.monotonic() + within
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {within}s (last: {result!r})")
        await asyncio.sleep(0.05)


class FlowEnv:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.names = TopicNames(settings.topic_prefix)
        apply_topics(create_admin(settings), fixed_topic_plans(load_specs(), settings))
        self.reader = ConfigReader(settings, name="test-flows-admin", engine_factory=None)
        self.writer = ConfigWriter(self.reader)
        self.producer = AsyncProducer(producer_config(settings, **{"linger.ms": 0}))
        self.partitions = topic_partitions(create_admin(settings))[self.names.flow_events]
        self.client = FlowClient(self.producer, self.names, self.partitions)
        self.view = InstanceView(settings)
        self.runners: list[FlowRunner] = []

    async def __aenter__(self) -> FlowEnv:
        await self.reader.start()
        await self.reader.ready()
        await self.view.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        for runner in self.runners:
            await runner.stop()
        await self.view.stop()
        await self.producer.close()
        await self.reader.stop()

    async def flow(self, doc: Mapping[str, Any], kind: str = "flow") -> int:
        """Create and activate a flow (or schedule) document; returns the config offset."""
        object_id = str(doc.get(f"{kind}_id") or doc["id"])
        await self.writer.apply(kind, object_id, Create(dict(doc)))
        return (await self.writer.apply(kind, object_id, Activate())).offset

    async def runner(self, **kwargs: Any) -> FlowRunner:
        runner = FlowRunner(self.settings, **kwargs)
        self.runners.append(runner)
        await runner.start()
        return runner

    async def start(self, flow_id: str, instance_id: str, data: Any = None, version: int = 1) -> None:
        await self.client.send(
            StartEvent(instance_id=instance_id, flow_id=flow_id, flow_version=version, data=data or {})
        )

    async def wait(self, instance_id: str, status: str | tuple[str, ...], seconds: float = 60) -> InstanceState:
        wanted = (status,) if isinstance(status, str) else status
        state = await self.view.wait_for(instance_id, lambda s: s.status in wanted, seconds)
        assert state is not None and state.status in wanted, (
            f"{instance_id}: {state and state.status} {state and state.timeline[-3:]}"
        )
        return state


def runner_env(settings: Settings, name: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith("QUASAR_")}
    env.update(
        {
            "QUASAR_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
            "QUASAR_TOPIC_PREFIX": settings.topic_prefix,
            "QUASAR_FETCH_WAIT_MAX_MS": str(settings.fetch_wait_max_ms),
            "QUASAR_SESSION_TIMEOUT_MS": str(settings.session_timeout_ms),
            "QUASAR_WORKER_METRICS_PORT": "0",
            "QUASAR_INSTANCE_ID": name,
            "QUASAR_LOG_FORMAT": "console",
            "QUASAR_LOG_LEVEL": "info",
        }
    )
    return env


class RunnerProcess:
    """`quasar flows run` (or `command`, e.g. `("worker",)`) as a subprocess, so it can be killed with
    SIGKILL; its log goes to a file."""

    def __init__(
        self,
        settings: Settings,
        name: str,
        log_dir: Any,
        command: tuple[str, ...] = ("flows", "run"),
        env: Mapping[str, str] | None = None,
    ) -> None:
        import subprocess
        import sys
        from pathlib import Path

        self.name = name
        self.log = Path(log_dir) / f"{name}.log"
        quasar = Path(sys.executable).with_name("quasar")
        self.proc = subprocess.Popen(
            [str(quasar), *command],
            env=runner_env(settings, name) | dict(env or {}),
            stdout=subprocess.DEVNULL,
            stderr=self.log.open("wb"),
        )

    def owned(self) -> list[int] | None:
        """Partitions from the runner's latest `owning partitions [...]` log line (None before the first)."""
        import re

        found = re.findall(r"owning partitions \[([0-9, ]*)\]", self.log.read_text(errors="replace"))
        if not found:
            return None
        return [int(p) for p in found[-1].split(",") if p.strip()]

    def kill(self) -> None:
        import signal

        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except Exception:
                self.kill()
