"""AI authoring over MCP, driven by the MCP SDK's own client against a real gateway on the real broker:
validate -> create draft -> dry-run -> request release; activation is not offered without the flag, and
with it the release policy still decides."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from mcp import Client

from app.mcp_server import build_server
from tests.fixtures.kafka import make_test_settings
from tests.gateway.conftest import Gateway, apply_quasar_topics, start_gateway

TASKS = [
    {"id": "parse", "name": "parse",
     "function": {"name": "parse_json", "input": {"source": "payload", "target": "req"}}},
    {"id": "t", "name": "t", "function": {"name": "map", "input": {"mappings": [
        {"path": "data.doubled", "logic": {"*": [{"var": "data.req.n"}, 2]}}]}}},
]  # fmt: skip
KEYS = [
    {"name": "assistant", "role": "editor", "key": "key-assistant", "scope": {"ids": ["ai-*"]}},
    {"name": "root", "role": "admin", "key": "key-root"},
]


@pytest.fixture(scope="module")
async def gw(kafka_bootstrap: str) -> AsyncIterator[Gateway]:
    s = make_test_settings(kafka_bootstrap, instance_id="mcp-gw", admin_auth_enabled=True, admin_keys=KEYS)
    apply_quasar_topics(s)
    g = await start_gateway(s)
    policy = {"match": {"ids": ["ai-*"]}, "min_approvers": 1, "exclude_author": True}
    r = await g.http.put("/api/v1/admin/policies/ai", json=policy, headers={"Authorization": "Bearer key-root"})
    assert r.status_code == 200, r.text
    yield g
    await g.stop()


def payload(result: Any) -> Any:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        data = result.structured_content
        return data.get("result", data) if isinstance(data, dict) else data
    return orjson.loads(result.content[0].text)


async def test_assistant_authors_a_draft_and_requests_a_release(gw: Gateway) -> None:
    server = build_server(gw.url, "key-assistant")
    async with Client(server) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"validate", "create_draft", "dry_run", "request_release", "diff"} <= tools
        assert not {"execute_release", "delete_object"} & tools  # not without --allow-activation

        definition = {"workflow_id": "ai-double", "name": "double", "tasks": TASKS}
        bad = await client.call_tool("validate", {"kind": "workflow", "definition": {"name": "x", "tasks": []}})
        assert "tasks" in str(payload(bad))  # field errors come back to the assistant
        good = payload(await client.call_tool("validate", {"kind": "workflow", "definition": definition}))
        assert good["valid"] is True, good
        created = payload(await client.call_tool("create_draft", {"kind": "workflow", "definition": definition}))
        assert created["status"] == "draft"
        run = payload(await client.call_tool("dry_run", {"object_id": "ai-double", "data": {"n": 21}}))
        assert "42" in orjson.dumps(run).decode()
        rel = payload(await client.call_tool("request_release", {"kind": "workflow", "object_id": "ai-double"}))
        assert rel["state"] == "requested" and rel["author"] == "key:assistant"

        # Outside its key's scope the assistant is refused like any principal.
        other = await client.call_tool("create_draft", {"kind": "workflow", "definition": {**definition,
                                       "workflow_id": "payments"}})  # fmt: skip
        assert other.is_error and "FORBIDDEN" in other.content[0].text


async def test_activation_needs_the_flag_and_still_obeys_the_policy(gw: Gateway) -> None:
    server = build_server(gw.url, "key-assistant", allow_activation=True)
    async with Client(server) as client:
        tools = {t.name for t in (await client.list_tools()).tools}
        assert {"execute_release", "delete_object"} <= tools
        status = payload(await client.call_tool("release_status", {"release_id": "workflow:ai-double:1"}))
        assert status["state"] == "requested"
        refused = await client.call_tool("execute_release", {"release_id": "workflow:ai-double:1"})
        assert refused.is_error and "approved" in refused.content[0].text
