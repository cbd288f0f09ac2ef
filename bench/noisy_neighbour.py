"""Noisy neighbour on the worker's event loop (issue 14 item 6): how long one costly record stalls others.

`python -m bench.noisy_neighbour` runs, in one asyncio loop as the worker does, a light channel
(a `map` task) processed continuously as "another partition", then one heavy record on a second
channel, and reports the light channel's worst latency while the heavy record runs:

- `reduce_merge`: a `reduce` + `merge` rule over a 6,000-item array in the request;
- `fan_out`: a 20-byte request to a channel whose workflow `channel_call`s the next channel twice,
  10 levels deep (2,046 calls unbounded).

The engine's default work budget applies (no options passed), so the same script measures any version:
run it on the old tree for the "before" row.

`pipeline` goes through the worker's `Pipeline.handle` instead: a heavy record within every limit (150
`reduce` tasks over 9,000 items, ~0.5 s) on one channel while a light channel's records are handled as
other partitions' records are. The first heavy record runs on the loop (nothing knows it is heavy yet);
the worker then runs that channel's records in a thread, so the second one shows the loop freed.
`light_records_per_s` is the normal path: light records through `Pipeline.handle`, one after the other.

Prints one JSON object.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from app.connectors import ConnectorServices, connector_registry
from app.engine.compiler import compile_workflow
from app.engine.executor import Engine, RunOptions
from app.engine.message import Message

REGISTRY = connector_registry()


def _wf(wid: str, *fns: dict[str, Any]) -> Any:
    tasks = [{"id": f"t{i}", "name": f"t{i}", "function": f} for i, f in enumerate(fns)]
    return compile_workflow({"workflow_id": wid, "name": wid, "tasks": tasks}, REGISTRY)


def _map(path: str, logic: Any) -> dict[str, Any]:
    return {"name": "map", "input": {"mappings": [{"path": path, "logic": logic}]}}


def build_engine(levels: int = 10) -> Engine:
    parse = {"name": "parse_json", "input": {"source": "payload", "target": "in"}}
    reduce_merge = {"reduce": [{"var": "data.in.users"}, {"merge": [{"var": "accumulator"}, [{"var": "current"}]]}, []]}
    channels: dict[str, Any] = {
        "light": [_wf("light", _map("data.ok", True))],
        "heavy": [_wf("heavy", parse, _map("data.all", reduce_merge))],
    }
    for i in range(levels):
        call = {"name": "channel_call", "input": {"channel": f"f{i + 1}", "response_path": "data.r"}}
        channels[f"f{i}"] = [_wf(f"f{i}", call, call)]
    channels[f"f{levels}"] = [_wf(f"f{levels}", _map("data.leaf", True))]
    return Engine(channels, REGISTRY)


async def _scenario(engine: Engine, channel: str, payload: Any) -> dict[str, Any]:
    services = ConnectorServices({})
    latencies: list[float] = []
    stop = asyncio.Event()

    async def light() -> None:
        while not stop.is_set():
            t0 = time.perf_counter()
            await asyncio.sleep(0.001)  # the next record of another partition arrives
            await engine.process("light", Message.from_request({}), RunOptions(services=services))
            latencies.append(time.perf_counter() - t0)

    runner = asyncio.create_task(light())
    await asyncio.sleep(0.2)
    latencies.clear()
    t0 = time.perf_counter()
    outcome = "completed"
    try:
        out = await engine.process(channel, Message.from_request(payload), RunOptions(services=services))
        if out.errors:
            outcome = f"errors: {out.errors[0].get('message', '')[:80]}"
    except Exception as exc:  # the bounded run ends in an error, which is the point
        outcome = f"{type(exc).__name__}: {str(exc)[:80]}"
    heavy_s = time.perf_counter() - t0
    await asyncio.sleep(0.05)
    stop.set()
    await runner
    return {
        "heavy_record_s": round(heavy_s, 3),
        "outcome": outcome,
        "light_max_latency_ms": round(max(latencies) * 1000, 1),
        "light_records_meanwhile": len(latencies),
    }


def _pipeline_view() -> tuple[Any, Any, Any]:
    from app.kafka.names import TopicNames
    from app.worker.pipeline import ChannelRoute, Pipeline, Record, WorkerView

    names = TopicNames("bench.")
    parse = {"name": "parse_json", "input": {"source": "payload", "target": "in"}}
    add = {"reduce": [{"var": "data.in.items"}, {"+": [{"var": "accumulator"}, {"var": "current"}]}, 0]}
    engine = Engine(
        {
            "light": [_wf("light", _map("data.ok", True))],
            "heavy": [_wf("heavy", parse, *[_map(f"data.r{i}", add) for i in range(150)])],
        },
        REGISTRY,
    )
    routes = {names.channel(c): ChannelRoute(c, names.channel(c), True, None, None) for c in ("light", "heavy")}
    pipeline = Pipeline(names, max_record_bytes=2_000_000, max_result_bytes=1_000_000)

    def record(channel: str, value: bytes, offset: int) -> Any:
        return Record(names.channel(channel), value, b"k", None, 0, offset)

    return pipeline, WorkerView(routes, engine), record


async def _pipeline_scenario() -> dict[str, Any]:
    pipeline, view, record = _pipeline_view()
    light_value = b'{"data": {}}'
    heavy_value = json.dumps({"data": {"items": list(range(9000))}}).encode()
    n = 20_000
    t0 = time.perf_counter()
    for i in range(n):
        await pipeline.handle(record("light", light_value, i), view)
    normal = n / (time.perf_counter() - t0)
    runs = []
    for attempt in ("first", "second"):
        latencies: list[float] = []
        stop = asyncio.Event()

        async def light(stop: asyncio.Event = stop, latencies: list[float] = latencies) -> None:
            i = 0
            while not stop.is_set():
                t = time.perf_counter()
                await asyncio.sleep(0.001)
                await pipeline.handle(record("light", light_value, i), view)
                latencies.append(time.perf_counter() - t)
                i += 1

        runner = asyncio.create_task(light())
        await asyncio.sleep(0.2)
        latencies.clear()
        t = time.perf_counter()
        out = await pipeline.handle(record("heavy", heavy_value, 0), view)
        heavy_s = time.perf_counter() - t
        await asyncio.sleep(0.05)
        stop.set()
        await runner
        runs.append(
            {
                "heavy_record": attempt,
                "heavy_record_s": round(heavy_s, 3),
                "outcome": out.status,
                "light_max_latency_ms": round(max(latencies) * 1000, 1),
                "light_records_meanwhile": len(latencies),
            }
        )
    close = getattr(pipeline, "close", None)
    if close is not None:
        close()
    return {"light_records_per_s": round(normal), "heavy_runs": runs}


async def run() -> dict[str, Any]:
    engine = build_engine()
    return {
        "reduce_merge": await _scenario(engine, "heavy", {"users": [{"id": i} for i in range(6000)]}),
        "fan_out": await _scenario(engine, "f0", {"n": 1}),
        "pipeline": await _pipeline_scenario(),
    }


def main() -> dict[str, Any]:
    result = asyncio.run(run())
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
