"""channel_call through the real engine: data flow, depth limit, cycle detection, own timeout."""

from __future__ import annotations

from typing import Any

import pytest

from app.connectors import ConnectorServices, connector_registry
from app.engine.compiler import compile_workflow
from app.engine.executor import Engine, RunOptions
from app.engine.message import Message
from app.errors import Timeout, ValidationFailed
from tests.connectors.servers import HttpTestServer

REGISTRY = connector_registry()
PARSE = {"name": "parse_json", "input": {"source": "payload", "target": "in"}}


def wf(wid: str, *fns: dict[str, Any]) -> Any:
    return compile_workflow(
        {
            "workflow_id": wid,
            "name": wid,
            "tasks": [{"id": f"t{i}", "name": f"t{i}", "function": f} for i, f in enumerate(fns)],
        },
        REGISTRY,
    )


def call(channel: str, **inp: Any) -> dict[str, Any]:
    return {"name": "channel_call", "input": {"channel": channel, **inp}}


def double() -> Any:
    return wf(
        "double",
        PARSE,
        {
            "name": "map",
            "input": {
                "mappings": [
                    {"path": "data.doubled", "logic": {"*": [{"var": "data.in.n"}, 2]}},
                    {"path": "data.seen_meta", "logic": {"var": "metadata.tenant"}},
                ]
            },
        },
    )


async def test_child_data_replaces_parent_data_or_goes_to_response_path() -> None:
    engine = Engine(
        {
            "double": [double()],
            "replace": [wf("r", PARSE, call("double", data_logic={"n": {"var": "data.in.x"}}))],
            "keep": [wf("k", PARSE, call("double", data={"n": 5}, response_path="data.child"))],
        }
    )
    svc = ConnectorServices({})
    out = await engine.process("replace", Message.from_request({"x": 4}, {"tenant": "t1"}), RunOptions(services=svc))
    assert out.data == {"in": {"n": 4}, "doubled": 8, "seen_meta": "t1"}  # Orion: parent data replaced
    out = await engine.process("keep", Message.from_request({"x": 4}), RunOptions(services=svc))
    assert out.data["in"] == {"x": 4} and out.data["child"]["doubled"] == 10


async def test_default_child_payload_is_the_parents_payload() -> None:
    engine = Engine({"double": [double()], "p": [wf("p", call("double", response_path="data.c"))]})
    out = await engine.process("p", Message.from_request({"n": 21}), RunOptions(services=ConnectorServices({})))
    assert out.data["c"]["doubled"] == 42


async def test_cycle_including_the_origin_is_caught_at_the_first_repeat() -> None:
    counter = {"name": "map", "input": {"mappings": [{"path": "data.x", "logic": 1}]}}
    engine = Engine(
        {
            "a": [wf("a", counter, call("b"))],
            "b": [wf("b", counter, call("a"))],
        }
    )
    msg = Message.from_request({})
    with pytest.raises(ValidationFailed) as info:
        await engine.process("a", msg, RunOptions(services=ConnectorServices({})))
    # A -> B -> A is refused at the B -> A hop (Orion would run A again and notice one hop later)
    assert info.value.message == "channel_call cycle: a -> b -> a"


async def test_self_call_is_a_cycle() -> None:
    w = wf("s", call("s"))
    w.tasks[0].continue_on_error = True
    msg = Message.from_request({})
    await Engine({"s": [w]}).process("s", msg, RunOptions(services=ConnectorServices({})))
    assert "channel_call cycle: s -> s" in msg.errors[0]["message"]


async def test_depth_limit() -> None:
    n = 6
    channels = {f"c{i}": [wf(f"w{i}", call(f"c{i + 1}", response_path="data.next"))] for i in range(n)}
    channels[f"c{n}"] = [wf("leaf", {"name": "map", "input": {"mappings": [{"path": "data.leaf", "logic": True}]}})]
    engine = Engine(channels)
    ok = await engine.process(
        "c0", Message.from_request({}), RunOptions(services=ConnectorServices({}, max_channel_call_depth=6))
    )
    depth, node = 0, ok.data
    while "next" in node:
        node, depth = node["next"], depth + 1
    assert depth == 6 and node == {"leaf": True}
    svc = ConnectorServices({}, max_channel_call_depth=5)
    first = channels["c0"][0]
    first.tasks[0].continue_on_error = True
    msg = Message.from_request({})
    await Engine(channels).process("c0", msg, RunOptions(services=svc))
    assert any("depth limit (5) exceeded" in e["message"] for e in msg.errors)


async def test_unknown_target_channel_is_a_clear_error() -> None:
    w = wf("u", call("nope"))
    w.tasks[0].continue_on_error = True
    msg = Message.from_request({})
    await Engine({"u": [w]}).process("u", msg, RunOptions(services=ConnectorServices({})))
    assert "channel 'nope' not found" in msg.errors[0]["message"]


async def test_channel_call_has_its_own_timeout(http_server: HttpTestServer) -> None:
    svc = ConnectorServices(
        {
            "h": {
                "name": "api",
                "connector_type": "http",
                "config": {"url": http_server.url, "allow_private_urls": True},
            }
        }
    )
    slow = wf("slow", {"name": "http_call", "input": {"connector": "api", "path": "slow?ms=3000"}})
    engine = Engine({"slow": [slow], "caller": [wf("c", call("slow", timeout_ms=150))]})
    with pytest.raises(Timeout, match=r"channel_call to .slow. timed out"):
        await engine.process("caller", Message.from_request({}), RunOptions(services=svc))
    await svc.aclose()


async def test_channel_logic_picks_the_target() -> None:
    engine = Engine(
        {
            "double": [double()],
            "router": [
                wf(
                    "r",
                    PARSE,
                    call(
                        "unused",
                        channel_logic={"var": "data.in.target"},
                        data={"n": 1},
                        response_path="data.out",
                    ),
                )
            ],
        }
    )
    out = await engine.process(
        "router", Message.from_request({"target": "double"}), RunOptions(services=ConnectorServices({}))
    )
    assert out.data["out"]["doubled"] == 2
