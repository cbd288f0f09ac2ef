"""A costly channel does not stall the others on the same worker, end to end on the real broker (issue 14
item 6: keep a slow record from stalling other partitions).

Once one of its records ran long, a channel's records run in a thread and leave the worker's in-order batch
loop, so a light channel's call is answered while the heavy record still runs (before: after it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest

from app.settings import Settings
from tests.fixtures.kafka import make_test_settings
from tests.gateway.conftest import (
    Admin,
    Gateway,
    apply_quasar_topics,
    eventually,
    map_task,
    parse_task,
    running_gateway,
)
from tests.gateway.conftest import running_worker as running_channel_worker

pytestmark = pytest.mark.timeout(240)

# Within every limit (9,000 items, no nesting), 1,800 times: ~1.5-2.5 s a record on this box, several times a
# light call's hop through the broker (measured 0.3 s on Tansu, more on a loaded box). The first call only has
# to run long enough to mark the channel heavy (HEAVY_RECORD_S): a tenth of the items.
ADD = {"reduce": [{"var": "data.req.items"}, {"+": [{"var": "accumulator"}, {"var": "current"}]}, 0]}
HEAVY_TASKS = [parse_task(), *(map_task(f"r{i}", (f"data.r{i}", ADD)) for i in range(1800))]
LAST = "r1799"
HEAVY_WF = {"workflow_id": "heavy-wf", "name": "heavy", "tasks": HEAVY_TASKS}
LIGHT_WF = {"workflow_id": "light-wf", "name": "light", "tasks": [map_task("ok", ("data.ok", True))]}
HEAVY_BODY = {"data": {"items": list(range(9000))}}
MARKING_BODY = {"data": {"items": list(range(900))}}


def _channel(name: str, workflow: str) -> dict[str, Any]:
    return {"channel_id": name, "name": name, "channel_type": "sync", "protocol": "http",
            "methods": ["POST"], "workflow_id": workflow}  # fmt: skip


@pytest.fixture(scope="module")
def heavy_settings(kafka_bootstrap: str) -> Settings:
    settings = make_test_settings(kafka_bootstrap, instance_id="gw-heavy", processing_timeout_ms=60_000)
    apply_quasar_topics(settings)
    return settings


@pytest.fixture(scope="module")
async def stack(heavy_settings: Settings) -> AsyncIterator[tuple[Gateway, Any]]:
    async with running_channel_worker(heavy_settings, "worker-heavy") as worker, running_gateway(heavy_settings) as gw:
        admin = Admin(gw.http)
        for wf in (HEAVY_WF, LIGHT_WF):
            await admin.workflow(wf)
        await admin.channel(_channel("heavy", "heavy-wf"))
        await admin.channel(_channel("light", "light-wf"))
        yield gw, worker


async def test_a_light_channel_is_answered_while_a_heavy_record_runs(stack: tuple[Gateway, Any]) -> None:
    gw, worker = stack
    first = await gw.http.post("/api/v1/data/heavy", json=MARKING_BODY, timeout=60)
    assert first.status_code == 200 and first.json()["data"][LAST] == sum(range(900))
    assert "heavy" in worker.pipeline.heavy  # it ran long: its next records leave the loop
    accepted = await gw.http.post("/api/v1/data/heavy/async", json=HEAVY_BODY)
    assert accepted.status_code == 202  # on the channel topic, ahead of the light call below
    trace_id = accepted.json()["trace_id"]
    light = await gw.http.post("/api/v1/data/light", json={"data": {}}, timeout=60)
    answered = datetime.now(UTC)
    assert light.status_code == 200 and light.json()["data"]["ok"] is True

    done: dict[str, Any] = {}

    async def completed() -> bool:
        t = (await gw.http.get(f"/api/v1/data/traces/{trace_id}")).json()
        done.update(t)
        return t["status"] == "completed" and t["result"]["data"][LAST] == sum(range(9000))

    assert await eventually(completed, within=60)
    # The heavy record finished after the light call was answered (same clock: the worker stamps the trace).
    # Compared by time, not by reading the trace as `pending` right away: that read raced the trace reader.
    finished = datetime.fromisoformat(done["completed_at"].replace("Z", "+00:00"))
    assert finished > answered, (done["completed_at"], answered.isoformat())
