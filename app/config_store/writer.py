"""`ConfigWriter`: turns admin requests into proposals on `quasar.config` (optimistic concurrency).

    writer = ConfigWriter(reader)                  # reader: a started ConfigReader of this process
    result = await writer.apply("workflow", "orders", Activate(10), actor="alice")

`apply` reads the object and its revision from the local reader's state, runs the pure lifecycle
operation, writes a proposal expecting that revision, and returns only after the local reader has
folded that very record (matched by its unique key): applied -> audit record + result; rejected as
stale -> re-read and re-run (bounded) for retry-safe operations, else `Conflict` (409).

Superseded proposals (the object's previous accepted record) and rejected ones are tombstoned so
compaction can drop them; the latest accepted record of every object is never tombstoned.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from app.config_store.operations import Change, Delete, Operation, Restore, summarize
from app.config_store.reader import ConfigReader
from app.config_store.rulesets import check_activation, check_workflow_rules
from app.config_store.state import KINDS, ObjectState, Outcome, encode_object, proposal_key
from app.errors import BadRequest, Conflict, EngineFailure, PayloadTooLarge, PolicyRefused, ValidationFailed
from app.kafka.names import TopicNames

__all__ = ["BACKUP_FORMAT", "ConfigWriter", "WriteResult"]

BACKUP_FORMAT = "quasar-config-backup/1"
# Operations whose target version must compile before it is written (Orion quirk 8: reject at create).
_VALIDATED_OPS = frozenset({"create", "update", "put", "activate", "rollback"})


@dataclass(frozen=True, slots=True)
class WriteResult:
    """An applied change: the object after it (None when deleted) and where it sits in the log."""

    kind: str
    id: str
    op: str
    revision: int
    offset: int  # config log offset of the accepted proposal: send it as `quasar-config-offset`
    version: int | None  # the version the operation targeted
    object: ObjectState | None
    attempts: int
    changed: bool = True  # False: the request changed nothing, nothing was written


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def proposal_records(
    kind: str,
    object_id: str,
    change: Change,
    releases: Mapping[str, Any],
    revision: int,
    actor: str,
    ts: int,
    *,
    previous: ObjectState | None = None,
    written: Callable[[str], bool] = lambda key: False,
) -> list[tuple[str, bytes]]:
    """The config records (key, value) proposing `change` on top of `revision` (docs/internals.md): the
    archive records of its archived versions that are not `written` yet, then the proposal (last), which
    carries only the draft and active versions, so its size does not grow with the object's history."""
    key = proposal_key(kind, object_id, revision + 1, uuid.uuid4().hex[:16])
    archives: list[tuple[str, bytes]] = []
    obj: dict[str, Any] | None = None
    if change.versions is not None:
        obj, archives = encode_object(kind, object_id, change.versions, releases, previous=previous, written=written)
    value = {
        "kind": kind,
        "id": object_id,
        "op": change.op,
        "expected_revision": revision,
        "revision": revision + 1,
        "actor": actor,
        "audited": True,  # this writer audits its own change; readers audit records that are not
        "ts": ts,
        "object": obj,
    }
    return [*archives, (key, orjson.dumps(value))]


class ConfigWriter:
    """Admin writer over a local `ConfigReader` (CLI, admin API)."""

    def __init__(
        self,
        reader: ConfigReader,
        *,
        max_attempts: int = 5,
        write_timeout: float = 30.0,
        audit: bool = True,
        gc: bool = True,
    ) -> None:
        self.reader = reader
        self.max_attempts = max_attempts
        self.write_timeout = write_timeout
        self.audit = audit
        self.gc = gc
        self.audit_topic = TopicNames(reader.settings.topic_prefix).audit

    async def apply(
        self,
        kind: str,
        object_id: str,
        operation: Operation,
        *,
        actor: str = "system",
        expected_revision: int | None = None,
        validate: bool = True,
    ) -> WriteResult:
        """Run `operation` on the object and write it; returns once the local reader applied it.

        expected_revision: the revision the caller saw (e.g. an If-Match header); a mismatch is a 409 and
        is never retried. Without it, stale rejections of retry-safe operations are retried on fresh state.
        validate: refuse (400) a created/updated/activated version whose definition does not compile.
        Raises NotFound / Conflict / BadRequest / ValidationFailed from the operation.
        """
        if kind not in KINDS:
            raise BadRequest(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        if not self.reader.is_ready:
            await self.reader.ready(self.write_timeout)
        state = self.reader.state
        for attempt in range(1, self.max_attempts + 1):
            current = state.get_any(kind, object_id)
            revision = current.revision if current is not None else 0
            if expected_revision is not None and expected_revision != revision:
                # Our reader may lag behind the caller: catch up once before calling it a conflict.
                await self.reader.sync(self.write_timeout)
                current = state.get_any(kind, object_id)
                revision = current.revision if current is not None else 0
                if expected_revision != revision:
                    raise Conflict(
                        f"{kind} '{object_id}' is at revision {revision}, not {expected_revision}: "
                        "it was changed meanwhile; read it again"
                    )
            live = current if current is not None and not current.deleted else None
            ts = int(time.time() * 1000)
            change = operation(kind, object_id, live, _now_iso())
            releases = change.releases if change.releases is not None else (dict(live.releases) if live else {})
            unchanged_releases = live is not None and releases == dict(live.releases)
            if (
                live is not None
                and change.versions is not None
                and dict(change.versions) == dict(live.versions)
                and unchanged_releases
            ):
                return WriteResult(
                    kind,
                    object_id,
                    change.op,
                    revision,
                    live.offset,
                    change.version,
                    live,
                    attempt,
                    changed=False,
                )
            if validate and change.op in _VALIDATED_OPS:
                self._validate(kind, object_id, change)
            if change.op != "restore":  # the fold's own decision, asked before writing anything
                refusal = state.policy_refusal(kind, object_id, live, change.versions, releases, change.op, ts)
                if refusal is not None:
                    raise PolicyRefused(refusal)
            outcome, key = await self._propose(kind, object_id, change, releases, revision, actor, ts)
            if outcome.status == "applied":
                after = state.get(kind, object_id)
                if self.gc and current is not None:
                    # The previous accepted proposal is superseded: everything it held is in ours.
                    await self.reader.write(current.key, None)
                if self.audit:
                    await self._audit(kind, object_id, change, live, outcome, actor)
                return WriteResult(
                    kind,
                    object_id,
                    change.op,
                    outcome.revision or 0,
                    outcome.offset,
                    change.version,
                    after,
                    attempt,
                )
            if self.gc:
                await self.reader.write(key, None)
            if outcome.status == "refused":  # the policy changed between our check and our record
                raise PolicyRefused(outcome.reason)
            if outcome.status == "ignored":
                raise EngineFailure(f"config proposal {key!r} was ignored by the fold: {outcome.reason}")
            if expected_revision is not None or not operation.retry_safe:
                raise Conflict(
                    f"{kind} '{object_id}' was changed by someone else meanwhile ({outcome.reason}); "
                    "read it again and retry"
                )
            # Stale: by now the reader has folded past our record, so the next read is fresher.
        raise Conflict(f"{kind} '{object_id}': gave up after {self.max_attempts} conflicting attempts")

    def check(self, kind: str, object_id: str, operation: Operation) -> Change:
        """What `apply` would write, without writing (dry runs): the same operation on the current state,
        the same validation; raises what `apply` would raise (NotFound, Conflict, ValidationFailed...)."""
        if kind not in KINDS:
            raise BadRequest(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
        current = self.reader.state.get_any(kind, object_id)
        live = current if current is not None and not current.deleted else None
        change = operation(kind, object_id, live, _now_iso())
        if change.op in _VALIDATED_OPS:
            self._validate(kind, object_id, change)
        return change

    def _validate(self, kind: str, object_id: str, change: Change) -> None:
        if change.versions is None or change.version is None:
            return
        doc = change.versions[change.version]
        if doc.get("status") not in ("draft", "active"):
            return
        result = self.reader.state.compile(kind, object_id, doc)
        if not result.valid:
            raise ValidationFailed(
                f"{kind} '{object_id}' version {change.version} is invalid: "
                + "; ".join(f"{e.get('field') or '<root>'}: {e.get('message')}" for e in result.errors),
                details=list(result.errors),
            )
        if kind == "ruleset" and doc.get("status") == "active":
            # Pinned calls are resolved now: a published ruleset never calls a version that may change or vanish.
            check_activation(self.reader.state, object_id, change.version, result.compiled)
        if kind == "workflow" and doc.get("status") == "active":
            # A `rule` task's ruleset must be runnable now, not discovered missing by the first record.
            check_workflow_rules(self.reader.state, object_id, change.version, doc)

    async def _propose(
        self,
        kind: str,
        object_id: str,
        change: Change,
        releases: Mapping[str, Any],
        revision: int,
        actor: str,
        ts: int,
    ) -> tuple[Outcome, str]:
        state = self.reader.state
        *archives, (key, value) = proposal_records(
            kind,
            object_id,
            change,
            releases,
            revision,
            actor,
            ts,
            previous=state.get(kind, object_id),
            written=state.has_record,
        )
        budget = self.reader.settings.max_record_bytes
        for record_key, record in [*archives, (key, value)]:
            if len(record) + len(record_key) > budget:
                raise PayloadTooLarge(
                    f"{kind} '{object_id}': a config record of {len(record)} bytes would exceed the record limit "
                    f"of {budget} bytes (QUASAR_MAX_RECORD_BYTES); one version must fit in a record"
                )
        for record_key, record in archives:  # on the log before the proposal that names them
            await self.reader.write(record_key, record)
        outcome = await self.reader.propose(key, value, self.write_timeout)
        return outcome, key

    async def _audit(
        self,
        kind: str,
        object_id: str,
        change: Change,
        before: ObjectState | None,
        outcome: Outcome,
        actor: str,
    ) -> None:
        record = {
            "who": actor,
            "what": change.op,
            "when": _now_iso(),
            "kind": kind,
            "id": object_id,
            "version": change.version,
            "revision": outcome.revision,
            "config_offset": outcome.offset,
            "before": summarize(before.versions) if before is not None else None,
            "after": summarize(change.versions),
        }
        await self.reader.write(f"{kind}/{object_id}", orjson.dumps(record), topic=self.audit_topic)

    # -- backup / restore ----------------------------------------------------------------------------
    async def backup(self) -> dict[str, Any]:
        """The whole config (every live object with all its versions) as one JSON document."""
        offset = await self.reader.sync(self.write_timeout)  # include everything written before now
        return {
            "format": BACKUP_FORMAT,
            "config_offset": offset,
            "created_at": _now_iso(),
            "objects": [
                {"kind": o.kind, "id": o.id, "versions": {str(n): d for n, d in sorted(o.versions.items())}}
                for o in self.reader.state.objects()
            ],
        }

    async def restore(
        self, doc: Mapping[str, Any], *, actor: str = "system", replace: bool = False
    ) -> list[WriteResult]:
        """Write every object of a `backup()` document (unchanged objects are skipped).

        replace: also delete live objects that are not in the backup. The whole document is checked
        before anything is written, so a bad backup changes nothing.
        """
        if not isinstance(doc, Mapping) or doc.get("format") != BACKUP_FORMAT:
            raise BadRequest(f"not a Quasar config backup (expected format {BACKUP_FORMAT!r})")
        entries = doc.get("objects")
        if not isinstance(entries, list):
            raise BadRequest("backup has no 'objects' list")
        ops: list[tuple[str, str, Operation]] = []
        seen: set[tuple[str, str]] = set()
        for i, entry in enumerate(entries):
            if not isinstance(entry, Mapping):
                raise BadRequest(f"objects[{i}] is not an object")
            kind, object_id = entry.get("kind"), entry.get("id")
            if not isinstance(kind, str) or not isinstance(object_id, str):
                raise BadRequest(f"objects[{i}] needs string 'kind' and 'id'")
            op = Restore(entry.get("versions") or {})
            op(kind, object_id, None, _now_iso())  # validate shapes before writing anything
            ops.append((kind, object_id, op))
            seen.add((kind, object_id))
        if not self.reader.is_ready:
            await self.reader.ready(self.write_timeout)
        await self.reader.sync(self.write_timeout)
        results = [await self.apply(k, i, op, actor=actor, validate=False) for k, i, op in ops]
        if replace:
            for obj in self.reader.state.objects():
                if (obj.kind, obj.id) not in seen:
                    results.append(await self.apply(obj.kind, obj.id, Delete(), actor=actor))
        return results
