"""Limits on untrusted JSON (request bodies, channel records): nesting depth.

Why: orjson parses up to 1024 levels but serializes only up to 255, so a body nested 256..1024 deep
parsed fine and then failed with a 500 when the gateway re-encoded it for Kafka (or when the worker
encoded the reply). Both sides refuse such input up front with a clear 400 / DLQ reason instead.
Pure stdlib: imported by the gateway and the worker alike.
"""

from __future__ import annotations

from typing import Any

__all__ = ["MAX_JSON_DEPTH", "json_too_deep"]

# Well under orjson's encode limit (255), leaving room for the envelopes wrapped around the payload.
MAX_JSON_DEPTH = 128


def json_too_deep(raw: bytes | None, doc: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether `doc` (parsed from `raw`) nests containers deeper than `limit` levels.

    Fast path: a text with at most `limit` opening brackets cannot be deeper (one C-speed scan); only
    bodies with many brackets are walked, iteratively (no recursion, whatever the depth). Without a JSON
    text (`raw` None: decoded from Avro or Protobuf) the document is always walked.
    """
    if type(doc) is not dict and type(doc) is not list:
        return False
    if raw is not None and raw.count(b"[") + raw.count(b"{") <= limit:
        return False
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if type(node) is dict else node
        for child in children:
            if type(child) is dict or type(child) is list:
                if depth >= limit:
                    return True
                stack.append((child, depth + 1))
    return False
