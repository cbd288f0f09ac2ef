"""The flow runner inside `quasar worker` (`worker_flows=auto`): it starts once a flow exists, runs
instances, reports itself on the worker's ops port (health, readiness, metrics) and stops with the
worker on SIGTERM."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from app.flow_runtime.service import FlowService
from app.kafka.broker import free_port
from app.settings import Settings
from tests.fixtures.kafka import make_test_settings
from tests.flows.runtime_support import FlowEnv, RunnerProcess, until

FLOW = {
    "flow_id": "in-worker",
    "name": "Runs inside the worker",
    "steps": [
        {"id": "nap", "type": "delay", "delay": {"duration": "1s"}},
        {"id": "done", "type": "terminal", "output": {"var": "data"}},
    ],
}


def _get(url: str) -> httpx.Response | None:
    try:
        return httpx.get(url, timeout=5)
    except httpx.HTTPError:
        return None


async def _component(base: str, name: str, value: str) -> dict[str, object]:
    async def check() -> dict[str, object] | None:
        response = await asyncio.to_thread(_get, f"{base}/health")
        body = response.json() if response is not None else None
        return body if body is not None and body["components"].get(name) == value else None

    deadline = asyncio.get_running_loop().time() + 60
    while True:
        body = await check()
        if body is not None:
            return body
        assert asyncio.get_running_loop().time() < deadline, f"{name} never became {value!r}"
        await asyncio.sleep(0.1)


async def test_the_worker_runs_flows_once_they_exist_and_stops_cleanly(settings: Settings, tmp_path: Path) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    async with FlowEnv(settings) as flows:
        worker = RunnerProcess(
            settings, "flows-in-worker", tmp_path, ("worker",), {"QUASAR_WORKER_METRICS_PORT": str(port)}
        )
        proc, log = worker.proc, worker.log
        try:
            # No flow in the config: no runner, no flow consumer group, and the worker is ready.
            idle = await _component(base, "broker", "ok")
            assert idle["components"]["flows"] == "not_configured"  # type: ignore[index]
            assert idle["flows"] == {"mode": "auto", "running": False}
            ready = await asyncio.to_thread(_get, f"{base}/readyz")
            assert ready is not None and ready.status_code == 200, ready and ready.text

            await flows.flow(FLOW)
            running = await _component(base, "flows", "ok")
            assert running["flows"]["running"] is True  # type: ignore[index]
            await flows.start("in-worker", "w-1", {"n": 1})
            done = await flows.wait("w-1", "completed")
            assert done.output == {"n": 1} and "nap" in done.outputs
            metrics = await asyncio.to_thread(_get, f"{base}/metrics")
            assert metrics is not None and "quasar_flow_events_applied_total" in metrics.text

            proc.terminate()
            code = await asyncio.to_thread(proc.wait, 60)
            assert code == 0, log.read_text(errors="replace")[-3000:]
            text = log.read_text(errors="replace")
            assert "flows: runner started in this process" in text
            assert "Traceback" not in text, text[-3000:]
        finally:
            worker.stop()


async def test_an_idle_runner_pauses_fetching_and_still_runs_what_comes(kafka_bootstrap: str) -> None:
    """`flows_idle_fetch_interval_ms` (set by `quasar dev` for Tansu): idle, the runner pauses its partitions and
    fetches once per interval; a start from outside is still applied, and its own timer resumes it at once."""
    settings = make_test_settings(kafka_bootstrap, flows_idle_fetch_interval_ms=300)
    async with FlowEnv(settings) as flows:
        await flows.flow(FLOW)
        runner = await flows.runner()
        await until(lambda: runner._idle.paused, within=30, what="the idle runner paused its partitions")
        await until(lambda: flows.view.idle.paused, within=30, what="the idle instance view paused too")
        await flows.start("in-worker", "after-idle", {"n": 2})
        done = await flows.wait("after-idle", "completed")
        assert done.output == {"n": 2} and [e["event"] for e in done.timeline].count("timer_fired") == 1
        await until(lambda: runner._idle.paused, within=30, what="paused again once idle")


async def test_worker_flows_on_starts_the_runner_at_once_and_off_never(settings: Settings) -> None:
    async with FlowEnv(settings) as env:
        await env.flow(FLOW)
        off = FlowService(settings.model_copy(update={"worker_flows": "off"}), env.reader)
        await off.start()
        assert off.runner is None and off.status() == "not_configured" and off.info()["mode"] == "off"
        await off.stop()

        on = FlowService(settings.model_copy(update={"worker_flows": "on"}), env.reader)
        await on.start()
        try:
            assert on.runner is not None
            await until(lambda: on.status() == "ok", within=60, what="the runner joined and recovered")
            await env.start("in-worker", "on-1", {"n": 3})
            assert (await env.wait("on-1", "completed")).output == {"n": 3}
        finally:
            await on.stop()
