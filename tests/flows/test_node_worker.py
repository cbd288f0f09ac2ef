"""The Node example worker (docs/examples/flows/worker.mjs, kafkajs, no Quasar code) completes a flow's
external task on the test broker.

The setup installs the example's npm dependency (docs/examples/flows/package.json) once into a cache
directory keyed by that file's content; without a reachable npm registry the test fails and says so."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from app.settings import Settings
from tests.flows.runtime_support import FlowEnv, until

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "flows"
WORKER = EXAMPLES / "worker.mjs"
PACKAGE = EXAMPLES / "package.json"


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "quasar-tests"


@pytest.fixture(scope="module")
def node_worker_dir() -> Path:
    """A directory with the example's package.json, its node_modules and a copy of worker.mjs (Node
    resolves `import "kafkajs"` from the script's own directory, so the script runs from there)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail("node and npm are needed to run docs/examples/flows/worker.mjs (install Node.js >= 18)")
    digest = hashlib.sha256(PACKAGE.read_bytes()).hexdigest()[:16]
    target = _cache_root() / f"flows-node-worker-{digest}"
    if not (target / "node_modules" / "kafkajs" / "package.json").exists():
        staging = target.with_name(target.name + f".tmp{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        shutil.copy(PACKAGE, staging / "package.json")
        try:
            done = subprocess.run(
                [npm, "install", "--no-audit", "--no-fund", "--no-package-lock"],
                cwd=staging,
                capture_output=True,
                text=True,
                timeout=180,
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                "npm install of the example worker's dependency (kafkajs) took over 180 s: is the registry reachable?"
            )
        if done.returncode != 0:
            pytest.fail(
                f"npm install of the example worker's dependency failed (exit {done.returncode}); is the npm "
                f"registry reachable?\n{done.stderr[-2000:]}"
            )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)  # complete installs only: an interrupted one is never reused
    shutil.copy(WORKER, target / "worker.mjs")
    return target


def _spawn_worker(directory: Path, settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "QUASAR_TOPIC_PREFIX": settings.topic_prefix,
    }
    with log.open("wb") as out:
        return subprocess.Popen(["node", str(directory / "worker.mjs"), "echo"], env=env, stdout=out, stderr=out)


def test_the_node_example_is_short_and_imports_nothing_from_quasar() -> None:
    text = WORKER.read_text()
    imports = [line for line in text.splitlines() if line.startswith("import ")]
    assert imports == ['import { Kafka } from "kafkajs";']
    assert len(text.splitlines()) <= 35


async def test_the_node_example_worker_completes_an_external_task(
    settings: Settings, tmp_path: Path, node_worker_dir: Path
) -> None:
    step = {
        "id": "echo",
        "type": "external_task",
        "handler": "echo",
        "input": {"var": "data"},
        "timeout": "30s",
        "retry": {"max_attempts": 3, "backoff": "1s"},
    }
    log = tmp_path / "node-worker.log"
    async with FlowEnv(settings) as env:
        await env.flow({"flow_id": "node-ext", "name": "Node worker", "steps": [step]})
        await env.runner()
        proc = _spawn_worker(node_worker_dir, settings, log)
        try:
            await env.start("node-ext", "from-node", {"n": 7, "text": "héllo"})
            done = await env.wait("from-node", ("completed", "failed"), seconds=120)
            assert done.status == "completed", (done.timeline[-5:], log.read_text(errors="replace")[-2000:])
            assert done.outputs["echo"] == {"echo": {"n": 7, "text": "héllo"}, "worker": proc.pid}
            await until(
                lambda: "echo: working on from-node:echo:1" in log.read_text(errors="replace"),
                within=10,
                what="the Node worker logged the task",
            )
            assert proc.poll() is None, log.read_text(errors="replace")[-2000:]
        finally:
            proc.kill()
            proc.wait(10)
