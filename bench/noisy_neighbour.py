"""Noisy neighbour on the worker's event loop (issue 14 item 6): how long one costly record stalls others.

`python -m bench.noisy_neighbour` runs, in one asyncio loop as the worker does, a light channel
(a `map` task) processed continuously as "another partition", then one heavy record on a second
channel, and reports the light channel's worst latency while the heavy record runs:

- `reduce_merge`: a `reduce` + `merge` rule over a 6,000-item array in the request;
- `fan_out`: a 20-byte request to a channel whose workflow `channel_call`s the next channel twice,
  10 levels deep (2,046 calls unbounded).

The engine's default work budget applies (no options passed), so the same script measures any version:
run it on the old tree for the "before" row. Prints one JSON object.
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


async def run() -> dict[str, Any]:
    engine = build_engine()
    return {
        "reduce_merge": await _scenario(engine, "heavy", {"users": [{"id": i} for i in range(6000)]}),
        "fan_out": await _scenario(engine, "f0", {"n": 1}),
    }


def main() -> dict[str, Any]:
    result = asyncio.run(run())
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
