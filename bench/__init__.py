"""Benchmarks: the engine against Orion's engine (`python -m bench.engine`), and shared workloads."""

from __future__ import annotations

__all__: list[str] = []
