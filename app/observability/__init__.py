"""Observability: metrics (one module), structured logs, log/trace context, health, the ops HTTP port."""

from __future__ import annotations

__all__: list[str] = []
