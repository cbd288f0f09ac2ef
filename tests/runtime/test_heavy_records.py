"""A channel whose synchronous records are costly runs them in a thread (issue 14 item 6: keep a slow record
from stalling other partitions). `python -m bench.noisy_neighbour` (pipeline) measures the effect."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from app.channels import TracingPolicy
from app.engine import Engine, compile_workflow
from app.worker.pipeline import HEAVY_RECORD_S, LIGHT_RECORD_S, ChannelRoute, Pipeline, Record, WorkerView
from tests.runtime.test_worker_pipeline import NAMES, Calls, _registry

TOPIC = NAMES.channel("heavy")
# Within every limit (9,000 items, no nesting), but 150 of them: hundreds of milliseconds a record.
ADD = {"reduce": [{"var": "data.in.items"}, {"+": [{"var": "accumulator"}, {"var": "current"}]}, 0]}
PARSE = {"name": "parse_json", "input": {"source": "payload", "target": "in"}}
TASKS = [
    {"id": "parse", "name": "parse", "function": PARSE},
    *(
        {
            "id": f"r{i}",
            "name": f"r{i}",
            "function": {"name": "map", "input": {"mappings": [{"path": f"data.r{i}", "logic": ADD}]}},
        }
        for i in range(150)
    ),
]


def _view() -> WorkerView:
    registry = _registry(Calls())
    wf = compile_workflow({"id": "wf", "name": "wf", "tasks": TASKS}, registry)
    # `tracing: all`: the result is read from the trace (no output topic) of a record produced straight to Kafka.
    route = ChannelRoute("heavy", TOPIC, True, None, None, ingested_tracing=TracingPolicy("all", explicit=True))
    return WorkerView({TOPIC: route}, Engine({"heavy": [wf]}, registry))


def _record(offset: int) -> Record:
    value = orjson.dumps({"data": {"items": list(range(9000))}})
    return Record(TOPIC, value, b"k", None, 0, offset)


async def _ticks_while(pipeline: Pipeline, view: WorkerView, offset: int) -> tuple[int, Any]:
    """How often the event loop ran other work while one heavy record was handled."""
    handled = asyncio.ensure_future(pipeline.handle(_record(offset), view))
    ticks = 0
    while not handled.done():
        ticks += 1
        await asyncio.sleep(0)
    return ticks, handled.result()


async def test_a_costly_channel_runs_its_next_records_off_the_event_loop() -> None:
    pipeline, view = Pipeline(NAMES, max_record_bytes=2_000_000, max_result_bytes=1_000_000), _view()
    try:
        ticks, first = await _ticks_while(pipeline, view, 1)  # nothing knows yet: on the loop, which waits
        assert first.status == "ok" and ticks == 1
        assert pipeline.heavy == {"heavy"}
        ticks, second = await _ticks_while(pipeline, view, 2)
        assert second.status == "ok" and ticks > 10  # the loop kept serving other work meanwhile
        assert orjson.loads(second.records[-1][1])["result"]["data"]["r149"] == sum(range(9000))
    finally:
        pipeline.close()


def test_a_channel_is_heavy_after_a_slow_run_and_light_again_after_a_fast_one() -> None:
    pipeline = Pipeline(NAMES, max_record_bytes=1_000, max_result_bytes=1_000)
    pipeline._classify("c", HEAVY_RECORD_S / 2)
    assert pipeline.heavy == set()
    pipeline._classify("c", HEAVY_RECORD_S)
    assert pipeline.heavy == {"c"}
    pipeline._classify("c", (LIGHT_RECORD_S + HEAVY_RECORD_S) / 2)  # in between: stays where it is
    assert pipeline.heavy == {"c"}
    pipeline._classify("c", LIGHT_RECORD_S / 2)
    assert pipeline.heavy == set()
