"""What governance is asked (`Admission`) and what it answers (`Decision`), the same for both paths.

Governance never knows whether a request came over HTTP or as a Kafka record; it decides, and each
path acts on the decision (the Benthos way: a component returns a value, its caller decides how to wait):

| action        | HTTP (gateway)                               | Kafka (worker)                                 |
|---------------|----------------------------------------------|------------------------------------------------|
| `admit`       | run it                                       | run it                                         |
| `deny`        | answer `error` (401, 400, 413)               | dead-letter with `error.code`                  |
| `throttle`    | 429 with `Retry-After: retry_after`          | pause the partition for `retry_after`, re-read |
| `unavailable` | 503 (fail-closed store outage)               | pause the partition for `retry_after`, re-read |
| `duplicate`   | 409, or the stored first answer (`response`) | trace it as a duplicate, do not run it         |
| `cached`      | 200 with `response` (sync requests only)     | never returned                                 |
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from app.channels import CompiledChannel
from app.errors import QuasarError

__all__ = ["ADMIT", "Action", "Admission", "Decision", "StoredResponse"]

Action = Literal["admit", "deny", "throttle", "unavailable", "duplicate", "cached"]


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """An answer kept in the governance store: the first answer of an idempotency key, or a cached body."""

    status: int
    body: bytes


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    error: QuasarError | None = None  # what a caller is told (deny / throttle / unavailable / duplicate)
    retry_after: float = 0.0  # throttle / unavailable: seconds until a retry may pass
    dedup_key: str | None = None  # the caller's idempotency key (claimed on admit, hit on duplicate)
    original: str | None = None  # duplicate: trace id of the first request with that key, when known
    response: StoredResponse | None = None  # duplicate with `return_original`, or a cache hit

    @property
    def admitted(self) -> bool:
        return self.action == "admit"


ADMIT = Decision("admit")


@dataclass(slots=True)
class Admission:
    """One request or record as governance sees it.

    `headers` are lower-cased. HTTP gives `client` (its IP) and `data`/`metadata` at once; Kafka gives the
    record `key` and its position `where`, and may pass `decode` instead of `data`/`metadata`: it is called
    only when a JSONLogic key rule needs the payload (an undecodable record is then seen as empty).
    """

    channel: CompiledChannel
    headers: Mapping[str, str]
    trace_id: str
    sync: bool = False  # the response cache serves sync requests only
    client: str | None = None
    key: str | None = None
    data: Any = None
    metadata: Mapping[str, Any] | None = None
    where: tuple[str, int, int] | None = None
    size: int | None = None  # payload bytes, when known
    decode: Callable[[], tuple[Any, Any]] | None = None
    _context: dict[str, Any] | None = field(default=None, repr=False)

    def context(self) -> dict[str, Any]:
        """What `key_logic`, `rollout_key` and `validation_logic` rules see (the same names on both paths):
        `{data, metadata, headers, query, params, path, client_ip, channel, key}`."""
        if self._context is None:
            data, metadata = self.data, self.metadata
            if self.decode is not None:
                try:
                    data, metadata = self.decode()
                except Exception:
                    data, metadata = None, {}
            meta = dict(metadata) if isinstance(metadata, Mapping) else {}
            if self.key is not None:
                meta.setdefault("kafka_key", self.key)
            meta.setdefault("headers", dict(self.headers))
            params = meta.get("params", {})
            self._context = {
                "data": data,
                "metadata": meta,
                "headers": meta["headers"],
                "query": meta.get("query", {}),
                "params": params,
                "path": params,  # Orion's docs write path.*; its code reads metadata.params.*
                "client_ip": self.client,
                "channel": self.channel.name,
                "key": self.key,
            }
        return self._context
