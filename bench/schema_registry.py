"""Schema Registry codec benchmark: per-record decode / encode cost next to JSON and schemaless Avro.

`python -m bench.schema_registry [--records N]`. Starts the test registry
(tests/fixtures/schema_registry.py: the REST subset confluent_kafka uses, over loopback HTTP), registers an
order schema, then times in this process, in the same run,
one record at a time, best of 3 rounds per row:

- json raw: `decode_raw` of the record as JSON (the default channel format), the baseline;
- schemaless avro: `decode_avro` of the record (value_format avro);
- avro_registry decode: `SchemaRegistry.decode` of a wire-format record whose schema id is known (the
  steady state: no registry call, the parsed writer schema is cached per id);
- avro_registry encode: `SchemaRegistry.encode` of the result under the output subject (steady state).

Ratios are against `json raw` of the same run; the absolute numbers move with the box's load.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import time
from collections.abc import Awaitable, Callable
from typing import Any

import fastavro
import orjson
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from app.channels import RegistryPolicy
from app.settings import Settings
from app.worker.codec import decode_avro, decode_raw
from app.worker.registry import SchemaRegistry
from tests.fixtures.schema_registry import LocalRegistry

__all__ = ["main"]

ORDER = {
    "type": "record",
    "name": "Order",
    "namespace": "bench",
    "fields": [
        {"name": "id", "type": "string"},
        {"name": "amount", "type": "double"},
        {"name": "country", "type": "string"},
        {"name": "tags", "type": {"type": "array", "items": "string"}},
    ],
}
RECORD = {"id": "o-1", "amount": 12.5, "country": "DE", "tags": ["a", "b", "c"]}


async def _time(fn: Callable[[], Any], n: int) -> float:
    """Best of 3 rounds, microseconds per call (awaits `fn()` when it returns an awaitable)."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(n):
            out = fn()
            if isinstance(out, Awaitable):
                await out
        best = min(best, (time.perf_counter() - started) / n * 1e6)
    return best


async def _rows(url: str, n: int) -> dict[str, float]:
    sr = SchemaRegistryClient({"url": url})
    ctx = SerializationContext("bench.in", MessageField.VALUE)
    wire = AvroSerializer(sr, orjson.dumps(ORDER).decode())(RECORD, ctx)
    sr.register_schema("bench.out-value", Schema(orjson.dumps(ORDER).decode(), "AVRO"))
    parsed = fastavro.parse_schema(ORDER)
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, parsed, RECORD)
    plain, as_json = buf.getvalue(), orjson.dumps(RECORD)
    registry, policy = SchemaRegistry(Settings(schema_registry_url=url)), RegistryPolicy("avro")
    assert await registry.decode(policy, wire, "bench.in") == RECORD  # warm: the one registry call per id
    await registry.encode(policy, RECORD, "bench.out")
    return {
        "json raw": await _time(lambda: decode_raw(as_json), n),
        "schemaless avro": await _time(lambda: decode_avro(plain, parsed), n),
        "avro_registry decode": await _time(lambda: registry.decode(policy, wire, "bench.in"), n),
        "avro_registry encode": await _time(lambda: registry.encode(policy, RECORD, "bench.out"), n),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20_000, help="records per round")
    args = parser.parse_args(argv)
    registry = LocalRegistry().start()
    try:
        rows = asyncio.run(_rows(registry.url, args.records))
    finally:
        registry.stop()
    base = rows["json raw"]
    for name, us in rows.items():
        print(f"{name:22s} {us:8.1f} us/record  {us / base:5.1f}x json raw")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
