"""The HTTP task bridge (app/gateway/tasks.py) on a real gateway, runner and broker: long-poll, lease,
complete, fail and retry, and every bad path (unknown task or handler, double completion, wrong handler,
oversized result, too many polls, roles and scopes)."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx

from tests.fixtures.kafka import make_test_settings
from tests.flows.runtime_support import FlowEnv
from tests.gateway.conftest import Gateway, eventually, start_gateway

FLOW = {
    "flow_id": "bridged",
    "name": "Work over HTTP",
    "steps": [
        {
            "id": "work",
            "type": "external_task",
            "handler": "http-echo",
            "input": {"var": "data"},
            "timeout": "60s",
            "retry": {"max_attempts": 3, "backoff": "200ms", "retry_on": ["BUSY"]},
        },
        {"id": "end", "type": "terminal", "output": {"var": "outputs.work"}},
    ],
}
ROOT_KEY = "bridge-root-key-0123456789"


def check(resp: httpx.Response, status: int, code: str | None = None) -> Any:
    assert resp.status_code == status, (resp.status_code, resp.text)
    if code is not None:
        assert resp.json()["error"]["code"] == code, resp.text
    return resp.json() if resp.content else None


async def poll(http: httpx.AsyncClient, handler: str = "http-echo", **body: Any) -> httpx.Response:
    return await http.post(f"/api/v1/tasks/{handler}/poll", json={"wait_ms": 30_000, **body}, timeout=60)


def _polls_waiting(gateway: Gateway, count: int) -> Any:
    async def check() -> bool:
        return bool(gateway.app.state.flow_service.bridge.polling >= count)

    return check


async def test_poll_complete_fail_retry_and_the_bad_paths(kafka_bootstrap: str) -> None:
    settings = make_test_settings(kafka_bootstrap, task_bridge_max_polls=2, task_bridge_max_result_bytes=4096)
    async with FlowEnv(settings) as env:
        await env.flow(FLOW)
        await env.runner()
        gateway = await start_gateway(settings)
        http = gateway.http
        try:
            # bad handlers: malformed, and one no active flow uses
            check(await poll(http, "bad$name"), 400, "BAD_REQUEST")
            check(await poll(http, "nobody"), 404, "NOT_FOUND")
            check(await http.post("/api/v1/tasks/http-echo/poll", json={"wait_ms": -1}), 400, "BAD_REQUEST")
            # nothing to do: 204 after the wait
            empty = await http.post("/api/v1/tasks/http-echo/poll", json={"wait_ms": 300})
            assert empty.status_code == 204 and not empty.content

            await env.start("bridged", "one", {"n": 1})
            task = check(await poll(http), 200)["data"]
            assert task["task_id"] == "one:work:1" and task["input"] == {"n": 1} and task["handler"] == "http-echo"
            assert task["lease_until"] > 0 and task["reply_topic"] == env.names.flow_results

            done = f"/api/v1/tasks/{task['task_id']}/complete"
            check(await http.post(done, json={"output": {"x": 1}, "handler": "other"}), 409, "CONFLICT")
            check(await http.post(done, json={"output": "y" * 5000}), 413, "PAYLOAD_TOO_LARGE")
            check(await http.post(done, json={"output": 1, "extra": 2}), 400, "BAD_REQUEST")
            check(await http.post(done, content=b"{not json"), 400, "BAD_REQUEST")
            check(await http.post("/api/v1/tasks/nope:work:1/complete", json={}), 404, "NOT_FOUND")
            check(await http.post("/api/v1/tasks/garbage/complete", json={}), 404, "NOT_FOUND")
            check(await http.post("/api/v1/tasks/one:work:7/complete", json={}), 404, "NOT_FOUND")

            assert check(await http.post(done, json={"output": {"echo": 1}}), 202)["data"]["status"] == "completed"
            finished = await env.wait("one", "completed")
            assert finished.output == {"echo": 1}
            check(await http.post(done, json={"output": {"again": 1}}), 409, "CONFLICT")  # double completion

            # a failure with a retryable code: the flow retries with attempt 2, the bridge hands that out
            await env.start("bridged", "two", {"n": 2})
            first = check(await poll(http), 200)["data"]
            failure = {"error": {"code": "BUSY", "message": "try later"}}
            check(await http.post(f"/api/v1/tasks/{first['task_id']}/fail", json=failure), 202)
            check(await http.post(f"/api/v1/tasks/{first['task_id']}/fail", json=failure), 409, "CONFLICT")
            check(await http.post("/api/v1/tasks/two:work:2/fail", json={"error": "no code"}), 400, "BAD_REQUEST")
            second = check(await poll(http), 200)["data"]
            assert second["task_id"] == "two:work:2" and second["attempt"] == 2
            check(await http.post(f"/api/v1/tasks/{second['task_id']}/complete", json={"output": "ok"}), 202)
            assert (await env.wait("two", "completed")).output == "ok"

            # a lease that ends without a result: the task is offered again (at-least-once)
            await env.start("bridged", "three", {"n": 3})
            leased = check(await poll(http, lease_ms=1000), 200)["data"]
            again = check(await poll(http), 200)["data"]
            assert again["task_id"] == leased["task_id"] == "three:work:1"
            check(await http.post(f"/api/v1/tasks/{again['task_id']}/complete", json={"output": 3}), 202)
            assert (await env.wait("three", "completed")).output == 3

            # at most task_bridge_max_polls waiting polls per gateway
            waiting = [asyncio.create_task(poll(http, wait_ms=3000)) for _ in range(2)]
            await eventually(_polls_waiting(gateway, 2))
            check(await poll(http), 429, "RATE_LIMITED")
            assert [r.status_code for r in await asyncio.gather(*waiting)] == [204, 204]
        finally:
            await gateway.stop()


async def test_a_task_nobody_completes_times_out_and_is_retried_by_the_flow(kafka_bootstrap: str) -> None:
    settings = make_test_settings(kafka_bootstrap)
    step = {**FLOW["steps"][0], "timeout": "5s", "retry": {"max_attempts": 2, "backoff": "100ms"}}  # type: ignore[dict-item]
    async with FlowEnv(settings) as env:
        await env.flow({**FLOW, "flow_id": "short", "steps": [step, FLOW["steps"][1]]})  # type: ignore[list-item]
        await env.runner()
        gateway = await start_gateway(settings)
        try:
            await env.start("short", "slow", {"n": 5})
            first = check(await poll(gateway.http), 200)["data"]  # leased for 60 s, never completed
            assert first["task_id"] == "slow:work:1" and first["deadline"] is not None
            second = check(await poll(gateway.http), 200)["data"]  # the flow's timer: TIMEOUT, attempt 2
            assert second["task_id"] == "slow:work:2"
            late = await gateway.http.post("/api/v1/tasks/slow:work:1/complete", json={"output": "late"})
            check(late, 409, "CONFLICT")
            check(await gateway.http.post("/api/v1/tasks/slow:work:2/complete", json={"output": "in time"}), 202)
            done = await env.wait("slow", "completed")
            assert done.output == "in time"
            assert any(e["event"] == "step_retry" and e.get("code") == "TIMEOUT" for e in done.timeline)
        finally:
            await gateway.stop()


async def test_a_task_handed_out_by_one_gateway_completes_through_another(kafka_bootstrap: str) -> None:
    settings = make_test_settings(kafka_bootstrap)
    async with FlowEnv(settings) as env:
        await env.flow(FLOW)
        await env.runner()
        first = await start_gateway(settings)
        second = await start_gateway(settings.model_copy(update={"instance_id": "gw-2"}))
        try:
            await env.start("bridged", "elsewhere", {"n": 4})
            task = check(await poll(first.http), 200)["data"]
            url = f"/api/v1/tasks/{task['task_id']}/complete"
            check(await second.http.post(url, json={"output": "via second"}), 202)  # checked against its view
            assert (await env.wait("elsewhere", "completed")).output == "via second"
            check(await second.http.post(url, json={"output": "again"}), 409, "CONFLICT")
        finally:
            await second.stop()
            await first.stop()


async def test_only_worker_keys_in_scope_may_work(kafka_bootstrap: str) -> None:
    settings = make_test_settings(kafka_bootstrap, admin_auth_enabled=True, admin_api_key=ROOT_KEY)
    root = {"Authorization": f"Bearer {ROOT_KEY}"}
    async with FlowEnv(settings) as env:
        await env.flow(FLOW)
        await env.flow({**FLOW, "flow_id": "other", "steps": [{**FLOW["steps"][0], "handler": "other-work"}]})  # type: ignore[dict-item]
        gateway = await start_gateway(settings)
        http = gateway.http
        try:

            async def key(name: str, role: str, scope: dict[str, list[str]] | None = None) -> dict[str, str]:
                body = {"name": name, "role": role, **({"scope": scope} if scope else {})}
                made = check(await http.post("/api/v1/admin/keys", json=body, headers=root), 201)
                return {"Authorization": f"Bearer {made['data']['key']}"}

            worker = await key("echo-worker", "worker", {"ids": ["http-*"]})
            reader = await key("a-reader", "reader")
            editor = await key("an-editor", "editor")
            check(await http.post("/api/v1/tasks/http-echo/poll", json={"wait_ms": 0}), 401)
            for other in (reader, editor):
                check(await http.post("/api/v1/tasks/http-echo/poll", json={"wait_ms": 0}, headers=other), 403)
            check(await http.post("/api/v1/tasks/other-work/poll", json={"wait_ms": 0}, headers=worker), 403)
            ok = await http.post("/api/v1/tasks/http-echo/poll", json={"wait_ms": 0}, headers=worker)
            assert ok.status_code == 204, ok.text
            ok = await http.post("/api/v1/tasks/http-echo/poll", json={"wait_ms": 0}, headers=root)
            assert ok.status_code == 204, ok.text
            # a worker key reads nothing else
            check(await http.get("/api/v1/admin/flows", headers=worker), 403, "FORBIDDEN")
            check(await http.get("/api/v1/instances", headers=worker), 403, "FORBIDDEN")
        finally:
            await gateway.stop()
