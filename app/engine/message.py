"""Orion's message model: payload, context {data, metadata, temp_data}, errors, audit trail.

A plain slotted class, not a pydantic model: it is created and mutated once per request on the
hot path. JSONLogic evaluates against `context` directly, so the payload is invisible to rules
until a `parse_json` task copies it into `data` (Orion semantics).
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import orjson

from app.errors import BadRequest

__all__ = ["AuditEntry", "Message", "error_info", "new_audit_entry", "new_id", "rfc3339"]


_SECONDS: dict[int, str] = {}


def rfc3339(ts: float | None = None) -> str:
    """RFC 3339 UTC timestamp (microseconds), as Orion writes in errors and audit entries.

    Same text as `datetime.isoformat()` with `Z` (no fraction when it is zero), but the date and
    time-of-day part is formatted once per second: this runs for every message (`processed_at`).
    """
    micros = time.time_ns() // 1000 if ts is None else round(ts * 1_000_000)
    secs, frac = divmod(micros, 1_000_000)
    head = _SECONDS.get(secs)
    if head is None:
        if len(_SECONDS) > 256:  # a bounded cache: entries are only useful for about a second
            _SECONDS.clear()
        head = _SECONDS[secs] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs))
    return f"{head}.{frac:06d}Z" if frac else head + "Z"


def new_id() -> str:
    """A random (version 4) UUID string; ~3x cheaper than `str(uuid.uuid4())`, same distribution."""
    h = os.urandom(16).hex()
    # version nibble 4; variant bits 10xx (one of 8, 9, a, b) from a random nibble
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


_VARIANT = "89ab"


def error_info(
    code: str,
    message: str,
    *,
    workflow_id: str | None = None,
    task_id: str | None = None,
    path: str | None = None,
) -> dict[str, Any]:
    """Orion's `ErrorInfo`: `path` is always present (normally null); absent ids are omitted."""
    info: dict[str, Any] = {"code": code, "message": message, "path": path}
    if workflow_id is not None:
        info["workflow_id"] = workflow_id
    if task_id is not None:
        info["task_id"] = task_id
    info["timestamp"] = rfc3339()
    return info


class AuditEntry(NamedTuple):
    """One executed task: Orion's `{workflow_id, task_id, timestamp, changes, status}`.

    The timestamp is kept as a float and formatted only when the trail is serialised.
    `changes` hold references to the values written, so they show the final state of a value
    that a later task mutated in place. A named tuple: generated code builds one per executed task
    with `new_audit_entry`, a C call with no Python frame.
    """

    # (workflow_id, task_id, status) first: the metrics key is `entry[:3]`, one C slice
    workflow_id: str
    task_id: str
    status: int
    ts: float
    changes: Sequence[tuple[str, Any, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "workflow_id": self.workflow_id,
            "task_id": self.task_id,
            "timestamp": rfc3339(self.ts),
            "changes": [{"path": p, "old_value": o, "new_value": n} for p, o, n in self.changes],
            "status": self.status,
        }


# `new_audit_entry((workflow_id, task_id, status, ts, changes))`: `AuditEntry(...)` without its Python `__new__`.
new_audit_entry: Callable[[tuple[str, str, int, float, Any]], AuditEntry] = functools.partial(tuple.__new__, AuditEntry)


class Message:
    """The unit of work flowing through a channel's workflows."""

    __slots__ = ("audit_trail", "context", "errors", "explain", "id", "payload")

    def __init__(
        self,
        payload: Any,
        *,
        metadata: dict[str, Any] | None = None,
        data: dict[str, Any] | None = None,
        id: str | None = None,
    ) -> None:
        self.id = id if id is not None else new_id()
        self.payload = payload
        self.context: dict[str, Any] = {
            "data": data if data is not None else {},
            "metadata": metadata if metadata is not None else {},
            "temp_data": {},
        }
        self.errors: list[dict[str, Any]] = []
        self.audit_trail: list[AuditEntry] = []
        # Decision explanations: None (the default, nothing recorded) or a list that rule functions
        # (decision_table, rule) append their decision paths to; see docs/rules.md "Explanations".
        self.explain: list[dict[str, Any]] | None = None

    @classmethod
    def from_request(cls, data: Any, metadata: dict[str, Any] | None = None, *, id: str | None = None) -> Message:
        """A request's `data` becomes the payload; `context.data` starts empty (Orion)."""
        return cls(data, metadata=dict(metadata) if metadata else {}, id=id)

    @classmethod
    def from_json(cls, body: bytes | str, *, id: str | None = None) -> Message:
        """Parse a request body `{"data": ..., "metadata": {...}}`; bad JSON is a `BadRequest`."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"Request body is not valid JSON: {exc}") from exc
        if not isinstance(doc, dict):
            raise BadRequest("Request body must be a JSON object with a 'data' field")
        metadata = doc.get("metadata")
        if metadata is not None and not isinstance(metadata, dict):
            raise BadRequest("'metadata' must be a JSON object")
        return cls(doc.get("data"), metadata=metadata or {}, id=id)

    @property
    def data(self) -> dict[str, Any]:
        return self.context["data"]  # type: ignore[no-any-return]

    @property
    def metadata(self) -> dict[str, Any]:
        return self.context["metadata"]  # type: ignore[no-any-return]

    @property
    def temp_data(self) -> dict[str, Any]:
        return self.context["temp_data"]  # type: ignore[no-any-return]

    def add_error(self, code: str, message: str, *, workflow_id: str | None = None, task_id: str | None = None) -> None:
        self.errors.append(error_info(code, message, workflow_id=workflow_id, task_id=task_id))

    def to_response(self) -> dict[str, Any]:
        """The sync HTTP 200 body: `{id, status: "ok", data, errors}` (+ `explain` when it was requested)."""
        response = {"id": self.id, "status": "ok", "data": self.context["data"], "errors": self.errors}
        if self.explain is not None:
            response["explain"] = self.explain
        return response

    def response_json(self) -> bytes:
        """`to_response()` as compact JSON bytes (insertion order kept)."""
        return orjson.dumps(self.to_response())

    def to_dict(self) -> dict[str, Any]:
        """The whole message, as Orion stores it on a trace (+ `explain` when it was requested)."""
        out = {
            "id": self.id,
            "payload": self.payload,
            "context": {
                "data": self.context["data"],
                "metadata": self.context["metadata"],
                "temp_data": self.context["temp_data"],
            },
            "audit_trail": [a.to_dict() for a in self.audit_trail],
            "errors": self.errors,
        }
        if self.explain is not None:
            out["explain"] = self.explain
        return out
