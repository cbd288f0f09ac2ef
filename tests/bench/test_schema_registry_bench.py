"""The Schema Registry benchmark runs (few records) against the test registry, so it does not rot."""

from __future__ import annotations

from bench.schema_registry import _rows


async def test_schema_registry_bench_measures_every_row(schema_registry_url: str) -> None:
    rows = await _rows(schema_registry_url, 5)
    assert list(rows) == ["json raw", "schemaless avro", "avro_registry decode", "avro_registry encode"]
    assert all(us > 0 for us in rows.values())
