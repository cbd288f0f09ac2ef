"""When a caller asked for a decision explanation.

Over HTTP: the `x-quasar-explain: 1` header or `?explain=1` (the gateway hands both to the worker in
the request's `metadata.headers` / `metadata.query`); on Kafka: the `quasar-explain: 1` record header
(checked by the worker). Dry-runs always explain.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["EXPLAIN_HEADER", "EXPLAIN_QUERY", "explain_requested", "is_yes"]

EXPLAIN_HEADER = "x-quasar-explain"
EXPLAIN_QUERY = "explain"
_YES = frozenset({"1", "true", "yes", "on"})


def is_yes(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() in _YES


def explain_requested(metadata: Mapping[str, Any] | None) -> bool:
    """True when the request's metadata carries the explain header or query parameter."""
    if not metadata:
        return False
    headers = metadata.get("headers")
    if isinstance(headers, Mapping) and is_yes(headers.get(EXPLAIN_HEADER)):
        return True
    query = metadata.get("query")
    return isinstance(query, Mapping) and is_yes(query.get(EXPLAIN_QUERY))
