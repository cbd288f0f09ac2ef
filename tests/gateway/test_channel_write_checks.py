"""Channel writes the admin API refuses (issue 14).

- item 11: Quasar's own topics are never channel topics (request or output). A channel bound to the
  config topic made the worker dead-letter every config record (secrets included); the admin API refuses
  such a channel, and the gateway never produces requests onto an internal topic.
- Low: a route pattern that an active channel's pattern makes ambiguous is refused at write.
"""

from __future__ import annotations

import pytest

from app.channels import ChannelInvalid, compile_channel
from app.kafka.names import TopicNames
from app.settings import Settings
from tests.gateway.conftest import Admin, Gateway, map_task


@pytest.mark.parametrize(
    ("field", "internal"),
    [("topic", "config"), ("topic", "audit"), ("topic", "dlq"), ("topic", "traces"), ("output", "replies")],
)
async def test_admin_refuses_a_channel_on_an_internal_topic(
    gateway: Gateway, e2e_settings: Settings, field: str, internal: str
) -> None:
    topic = e2e_settings.topic_prefix + internal
    doc = {"channel_id": f"bad-{field}-{internal}", "name": f"bad-{field}-{internal}", "channel_type": "async",
           "protocol": "kafka", "workflow_id": "none", "config": {}}  # fmt: skip
    if field == "topic":
        doc["topic"] = topic
    else:
        doc["config"] = {"output": topic}
    r = await gateway.http.post("/api/v1/admin/channels", json=doc)
    assert r.status_code == 400, r.text
    assert "internal to Quasar" in r.json()["error"]["message"]


def test_a_channel_on_an_internal_topic_never_compiles_so_no_reader_serves_it() -> None:
    # Written straight to the config topic, it is recorded invalid by the fold: not in any snapshot,
    # so the gateway never produces onto it and the worker never consumes it.
    doc = {"name": "c", "channel_type": "sync", "protocol": "http", "topic": "q.config"}
    with pytest.raises(ChannelInvalid) as err:
        compile_channel("c", doc, TopicNames("q."))
    assert err.value.errors == [{"field": "topic", "message": "'q.config' is internal to Quasar: not a channel topic"}]


async def test_admin_refuses_a_route_pattern_that_another_channel_makes_ambiguous(gateway: Gateway) -> None:
    admin = Admin(gateway.http)
    await admin.workflow({"workflow_id": "route-wf", "name": "route-wf", "tasks": [map_task("m", ("data.ok", True))]})
    await admin.channel({"channel_id": "route-a", "name": "route-a", "channel_type": "sync", "protocol": "http",
                         "methods": ["GET"], "route_pattern": "/stock/{sku}", "workflow_id": "route-wf"})  # fmt: skip
    clash = {"channel_id": "route-b", "name": "route-b", "channel_type": "sync", "protocol": "http",
             "methods": ["GET"], "route_pattern": "/stock/{item}", "workflow_id": "route-wf"}  # fmt: skip
    r = await gateway.http.post("/api/v1/admin/channels", json=clash)
    assert r.status_code == 400, r.text
    assert "route-a" in r.json()["error"]["message"]
    # A more literal pattern, or another priority, is not ambiguous.
    literal = {**clash, "route_pattern": "/stock/all"}
    assert (await gateway.http.post("/api/v1/admin/channels", json=literal)).status_code < 300
