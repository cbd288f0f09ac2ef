"""External workers: the plain confluent-kafka example (docs/examples/flows/worker.py) completes tasks, and
a worker killed mid-task leads to the step's timeout and retry, not a stuck instance."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from app.settings import Settings
from tests.flows.runtime_support import FlowEnv, until

WORKER = Path(__file__).resolve().parents[2] / "docs" / "examples" / "flows" / "worker.py"


class ExampleWorker:
    def __init__(self, settings: Settings, handler: str, log: Path) -> None:
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
            "QUASAR_TOPIC_PREFIX": settings.topic_prefix,
        }
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), handler], env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )

    def worked_on(self) -> list[str]:
        return [line.split("working on ", 1)[1] for line in self.log.read_text().splitlines() if "working on " in line]

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.kill()


def test_the_example_worker_imports_nothing_from_quasar() -> None:
    text = WORKER.read_text()
    assert (
        "import app" not in text and "from app" not in text and "quasar" not in text.split('"""')[2].split("prefix")[0]
    )
    assert len(text.splitlines()) <= 40


async def test_a_plain_kafka_worker_completes_tasks_and_a_killed_one_is_retried(
    settings: Settings, tmp_path: Path
) -> None:
    step = {
        "id": "echo",
        "type": "external_task",
        "handler": "echo",
        "input": {"var": "data"},
        "timeout": "10s",
        "retry": {"max_attempts": 3, "backoff": "1s"},
    }
    async with FlowEnv(settings) as env:
        await env.flow({"flow_id": "ext", "name": "External", "steps": [step]})
        await env.runner()
        first = ExampleWorker(settings, "echo", tmp_path / "w1.log")
        second: ExampleWorker | None = None
        try:
            await env.start("ext", "quick", {"n": 1})
            done = await env.wait("quick", "completed")
            assert done.outputs["echo"]["echo"] == {"n": 1}
            assert done.outputs["echo"]["worker"] == first.proc.pid

            await env.start("ext", "slow", {"n": 2, "sleep": 2})
            await until(lambda: "slow:echo:1" in first.worked_on(), within=60, what="the worker took the task")
            first.kill()  # mid-task: no result for attempt 1
            retried = await env.view.wait_for(
                "slow", lambda s: s.branches.get("echo") and s.branches["echo"].attempt == 2, 60
            )
            assert retried is not None and any(
                e["event"] == "step_retry" and e.get("code") == "TIMEOUT" for e in retried.timeline
            )
            second = ExampleWorker(settings, "echo", tmp_path / "w2.log")
            finished = await env.wait("slow", "completed", seconds=90)
            assert finished.outputs["echo"]["worker"] == second.proc.pid
            assert "slow:echo:2" in second.worked_on()
        finally:
            first.stop()
            if second is not None:
                second.stop()
