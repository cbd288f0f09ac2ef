"""The config fold: a pure, deterministic state machine over `quasar.config` records.

No Kafka here. Every reader feeds the records of partition 0 in offset order into `ConfigState.apply`
and ends in the same state (see docs/internals.md "Config topic records"):

- a proposal applies iff `expected_revision >= current revision` of its object; it then becomes the
  object's whole state (all versions) and `current revision = revision`;
- otherwise it is rejected as stale, identically on every reader;
- tombstones (null value) and `__marker__/` records are fold no-ops;
- anything malformed is ignored with a reason: a reader never crashes on a record.

Archived versions never change, so a proposal does not carry them inline (the record would grow with
history until the broker refused it): each archived version is its own immutable record
`__archive__/<kind>/<id>/<N>.<digest>` (digest: of its value), listed in index records of at most
`ARCHIVE_INDEX_SIZE` versions chained newest-first (`__archive__/<kind>/<id>/index.<digest>`), and the
proposal names the newest index (`"archive": <digest>`). Content-addressed keys make them
compaction-safe: never tombstoned, written before the proposal that names them (one partition: a lower
offset), identical when two writers write the same one. A proposal with archived versions inline (the
layout before) folds as it always did.

Definitions are compiled here, at fold time, never per message. A definition that fails to compile is
recorded as invalid with its errors. Compile results are cached by content, so a proposal that only
changes a version's status does not recompile it.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from app.config_store.releases import RELEASE_KINDS, Proposed, active_set, check_proposal, effective_policy
from app.digits import parse_uint

__all__ = [
    "ARCHIVE_INDEX_SIZE",
    "ARCHIVE_PREFIX",
    "DIRECT_KINDS",
    "KINDS",
    "MARKER_PREFIX",
    "META_FIELDS",
    "RUNTIME_PREFIX",
    "STATUSES",
    "CompileResult",
    "Compiler",
    "ConfigState",
    "ObjectState",
    "Outcome",
    "default_compiler",
    "definition_of",
    "encode_object",
    "id_field",
    "proposal_key",
    "valid_object_id",
]

KINDS: tuple[str, ...] = (
    "workflow",
    "channel",
    "connector",
    "apikey",
    "policy",
    "flow",
    "schedule",
    "ruleset",
    "testsuite",
)
# Kinds without drafts: every create/update is a new active version (the previous one is archived).
DIRECT_KINDS: frozenset[str] = frozenset({"connector", "apikey", "policy", "testsuite"})
STATUSES: tuple[str, ...] = ("draft", "active", "archived")
MARKER_PREFIX = "__marker__/"
# Immutable archived versions and their index records (module docstring).
ARCHIVE_PREFIX = "__archive__/"
ARCHIVE_INDEX_SIZE = 256  # archived versions one index record lists
_MAX_ARCHIVE_INDEXES = 100_000  # a chain longer than this is malformed (a loop cannot be built, but bound it)
# Runtime records share the config log but are not config: instance state every reader should see (a
# worker's circuit breakers) and commands for every instance (reset a breaker). The fold skips them;
# the reader hands them to its runtime listeners. See docs/internals.md.
RUNTIME_PREFIX = "__runtime__/"
# Lifecycle fields the store owns; everything else in a version document is the user's definition.
# `activated_at`: when the version last became active (a channel's `start_from: latest` starts there).
# `test_suite`: the test-suite result recorded when the version was activated (with its content digest).
META_FIELDS: frozenset[str] = frozenset(
    {"version", "status", "rollout_percentage", "created_at", "updated_at", "activated_at", "test_suite"}
)
_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KEY = re.compile(r"^(" + "|".join(KINDS) + r")/([^#]+)#(\d+)\.([A-Za-z0-9_-]+)$")


def valid_object_id(object_id: object) -> bool:
    """Orion's id rule: `^[A-Za-z0-9][A-Za-z0-9._-]*$`, at most 128 characters."""
    return isinstance(object_id, str) and bool(_ID.match(object_id))


def id_field(kind: str) -> str:
    """The id field name a document of `kind` carries (`workflow_id`, `channel_id`, `connector_id`)."""
    return f"{kind}_id"


def proposal_key(kind: str, object_id: str, revision: int, nonce: str) -> str:
    """`<kind>/<id>#<revision>.<nonce>`: rival proposals get distinct keys, so compaction keeps both."""
    return f"{kind}/{object_id}#{revision}.{nonce}"


def definition_of(kind: str, doc: Mapping[str, Any]) -> dict[str, Any]:
    """The user's definition inside a stored version document (lifecycle fields and own id removed).

    Only the object's *own* id field goes: a channel's `workflow_id` is its binding, part of the definition.
    """
    own = id_field(kind)
    return {k: v for k, v in doc.items() if k not in META_FIELDS and k != own}


@dataclass(frozen=True, slots=True)
class CompileResult:
    """Outcome of compiling one definition: `compiled` (engine object) or `errors` ([{field, message}])."""

    compiled: Any = None
    errors: tuple[Mapping[str, Any], ...] = ()

    @property
    def valid(self) -> bool:
        return not self.errors


# (kind, id, definition) -> CompileResult. Must be deterministic and must not raise.
Compiler = Callable[[str, str, Mapping[str, Any]], CompileResult]


def _errors_of(exc: Exception) -> tuple[Mapping[str, Any], ...]:
    errors = getattr(exc, "errors", None)
    if callable(errors):  # pydantic.ValidationError
        try:
            return tuple(
                {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", ""))}
                for e in errors()
            )
        except Exception:
            pass
    elif isinstance(errors, list | tuple) and errors:
        return tuple(e if isinstance(e, Mapping) else {"field": "", "message": str(e)} for e in errors)
    return ({"field": "", "message": f"{type(exc).__name__}: {exc}"},)


def default_compiler(
    kind: str, object_id: str, definition: Mapping[str, Any], *, registry: Any = None, topics: Any = None
) -> CompileResult:
    """Compile with the engine: workflows through `compile_workflow`, channels into a
    `app.channels.CompiledChannel`, connectors through their document model. Any exception (including a
    bug in the engine) becomes an invalid result.

    registry: the function registry workflows are bound to (the worker passes one with the real
    connector functions; the default one only has placeholders for them).
    topics: the `TopicNames` of the deployment's topic prefix (default `quasar.`)."""
    try:
        if kind == "workflow":
            from app.engine import compile_workflow

            return CompileResult(compiled=compile_workflow({"id": object_id, **definition}, registry))
        if kind == "channel":
            from app.channels import compile_channel

            return CompileResult(compiled=compile_channel(object_id, definition, topics))
        if kind == "ruleset":
            from app.engine.rules import compile_ruleset

            return CompileResult(compiled=compile_ruleset(definition, object_id))
        if kind == "testsuite":
            from app.engine.rules.testsuite import compile_testsuite

            return CompileResult(compiled=compile_testsuite(definition))
        if kind == "apikey":
            from app.identity import ApiKeyDoc

            return CompileResult(compiled=ApiKeyDoc.model_validate(definition))
        if kind == "flow":
            from app.flows import compile_flow

            return CompileResult(compiled=compile_flow({"flow_id": object_id, **definition}, registry))
        if kind == "schedule":
            from app.flows import compile_schedule

            return CompileResult(compiled=compile_schedule({"schedule_id": object_id, **definition}))
        if kind == "policy":
            from app.config_store.releases import ReleasePolicyDoc

            return CompileResult(compiled=ReleasePolicyDoc.model_validate(definition))
        from app.engine import ConnectorDoc

        return CompileResult(compiled=ConnectorDoc.model_validate({"connector_id": object_id, **definition}))
    except Exception as exc:
        return CompileResult(errors=_errors_of(exc))


@dataclass(frozen=True, slots=True)
class ObjectState:
    """One object's folded state: its revision, every version document, and each version's compile result.

    `versions` maps version number -> stored document (definition + `version`, `status`,
    `rollout_percentage`, `created_at`, `updated_at`). A deleted object keeps its revision (so stale
    proposals made before the delete stay rejected) with `deleted=True` and no versions.
    """

    kind: str
    id: str
    revision: int
    versions: Mapping[int, Mapping[str, Any]]
    compiled: Mapping[int, CompileResult]
    key: str  # key of the accepted proposal that produced this state (GC must keep it)
    offset: int
    deleted: bool = False
    # Release id -> release document (requests, approvals, executions: see config_store/releases.py).
    releases: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # Archived version -> digest of its archive record (layout only: not part of the state's JSON view).
    archive_digests: Mapping[int, str] = field(default_factory=dict)

    def by_status(self, status: str) -> list[int]:
        """Version numbers with `status`, newest first."""
        return sorted((n for n, d in self.versions.items() if d.get("status") == status), reverse=True)

    @property
    def latest(self) -> int | None:
        return max(self.versions) if self.versions else None

    @property
    def draft(self) -> int | None:
        drafts = self.by_status("draft")
        return drafts[0] if drafts else None

    @property
    def active(self) -> list[int]:
        return self.by_status("active")

    def errors_of(self, version: int) -> list[Mapping[str, Any]]:
        result = self.compiled.get(version)
        return list(result.errors) if result is not None else []

    def to_json(self) -> dict[str, Any]:
        """Plain JSON view (what backups and admin reads return)."""
        return {
            "kind": self.kind,
            "id": self.id,
            "revision": self.revision,
            "deleted": self.deleted,
            "versions": {str(n): dict(d) for n, d in sorted(self.versions.items())},
            "invalid": {str(n): list(r.errors) for n, r in sorted(self.compiled.items()) if not r.valid},
            **({"releases": {k: dict(v) for k, v in sorted(self.releases.items())}} if self.releases else {}),
        }


@dataclass(frozen=True, slots=True)
class Outcome:
    """What the fold did with one record."""

    status: Literal["applied", "rejected", "refused", "ignored"]  # refused: a release policy said no
    reason: str
    offset: int
    key: str | None = None
    kind: str | None = None
    id: str | None = None
    revision: int | None = None
    actor: str | None = None  # who the record says wrote it
    audited: bool = True  # False: written straight to the topic, not by a ConfigWriter (which audits itself)

    @property
    def applied(self) -> bool:
        return self.status == "applied"


@dataclass(slots=True)
class _Proposal:
    kind: str
    id: str
    op: str
    expected_revision: int
    revision: int
    versions: dict[int, dict[str, Any]] | None
    releases: dict[str, dict[str, Any]] = field(default_factory=dict)
    archive_digests: dict[int, str] = field(default_factory=dict)
    ts: int | None = None
    actor: str | None = None
    audited: bool = True


class _Malformed(Exception):
    pass


# Archive record key -> its parsed value (a version document, or an index {"versions", "prev"}).
ArchiveLookup = Callable[[str], Mapping[str, Any] | None]


def _digest(raw: bytes) -> str:
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


def _archive_key(kind: str, object_id: str, name: str, digest: str) -> str:
    return f"{ARCHIVE_PREFIX}{kind}/{object_id}/{name}.{digest}"


def encode_object(
    kind: str,
    object_id: str,
    versions: Mapping[int, Mapping[str, Any]],
    releases: Mapping[str, Any],
    *,
    previous: ObjectState | None = None,
    written: Callable[[str], bool] = lambda key: False,
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """A proposal's `object` and the archive records it names that are not `written` yet (write them
    first). Deterministic: the same versions give the same records. An archived version unchanged since
    `previous` keeps its digest without being encoded again (a write costs O(versions), not O(history bytes))."""
    inline = {str(n): d for n, d in sorted(versions.items()) if d.get("status") != "archived"}
    archived = sorted(n for n, d in versions.items() if d.get("status") == "archived")
    known = previous.archive_digests if previous is not None else {}
    records: list[tuple[str, bytes]] = []
    prev: str | None = None
    for start in range(0, len(archived), ARCHIVE_INDEX_SIZE):
        refs = {}
        for n in archived[start : start + ARCHIVE_INDEX_SIZE]:
            digest = known.get(n)
            if digest is not None and previous is not None and previous.versions.get(n) == versions[n]:
                key = _archive_key(kind, object_id, str(n), digest)
                if not written(key):
                    records.append((key, orjson.dumps(versions[n], option=orjson.OPT_SORT_KEYS)))
            else:
                raw = orjson.dumps(versions[n], option=orjson.OPT_SORT_KEYS)
                digest = _digest(raw)
                key = _archive_key(kind, object_id, str(n), digest)
                if not written(key):
                    records.append((key, raw))
            refs[str(n)] = digest
        index = orjson.dumps({"versions": refs, "prev": prev}, option=orjson.OPT_SORT_KEYS)
        prev = _digest(index)
        key = _archive_key(kind, object_id, "index", prev)
        if not written(key):
            records.append((key, index))
    obj: dict[str, Any] = {"versions": inline}
    if prev is not None:
        obj["archive"] = prev
    if releases:
        obj["releases"] = dict(releases)
    return obj, records


def _archived_versions(
    kind: str, object_id: str, newest: object, lookup: ArchiveLookup
) -> tuple[dict[int, dict[str, Any]], dict[int, str]]:
    """The archived versions an `archive` reference names, from the archive records folded so far, and
    their digests. The documents are the archive table's own (immutable: nobody changes a stored version)."""
    out: dict[int, dict[str, Any]] = {}
    digests: dict[int, str] = {}
    digest = newest
    for _ in range(_MAX_ARCHIVE_INDEXES):
        if digest is None:
            return out, digests
        if not isinstance(digest, str):
            raise _Malformed("archive reference must be a digest string")
        index = lookup(_archive_key(kind, object_id, "index", digest))
        if index is None:
            raise _Malformed(f"archive index {digest} is not on the log before the proposal")
        refs = index.get("versions")
        if not isinstance(refs, dict):
            raise _Malformed(f"archive index {digest} has no versions")
        for n, version_digest in refs.items():
            doc = lookup(_archive_key(kind, object_id, str(n), str(version_digest)))
            if doc is None:
                raise _Malformed(f"archived version {n} ({version_digest}) is not on the log before the proposal")
            if not (n.isdigit() and int(n) >= 1) or int(n) in out:
                raise _Malformed(f"archive index {digest}: bad or repeated version {n!r}")
            if doc.get("status") != "archived":
                raise _Malformed(f"archive record of version {n} is not an archived version")
            out[int(n)] = doc  # type: ignore[assignment]
            digests[int(n)] = str(version_digest)
        digest = index.get("prev")
    raise _Malformed("archive index chain too long")


def _parse(key: str, value: bytes, lookup: ArchiveLookup) -> _Proposal:
    m = _KEY.match(key)
    if m is None:
        raise _Malformed("key is not <kind>/<id>#<revision>.<nonce>")
    try:
        body = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise _Malformed(f"value is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _Malformed("value is not a JSON object")
    kind, object_id = body.get("kind"), body.get("id")
    if kind not in KINDS:
        raise _Malformed(f"unknown kind {kind!r}")
    if not valid_object_id(object_id) or not isinstance(object_id, str):
        raise _Malformed(f"invalid id {object_id!r}")
    if (kind, object_id, str(body.get("revision"))) != (m.group(1), m.group(2), m.group(3)):
        raise _Malformed("key does not match kind/id/revision of the value")
    expected, revision = body.get("expected_revision"), body.get("revision")
    if type(expected) is not int or type(revision) is not int or expected < 0:
        raise _Malformed("expected_revision and revision must be integers")
    # revision = expected + 1 is what makes the fold compaction-safe: an older proposal can never
    # carry a revision above the one a later accepted proposal expected.
    if revision != expected + 1:
        raise _Malformed("revision must be expected_revision + 1")
    op = body.get("op")
    if not isinstance(op, str):
        raise _Malformed("op must be a string")
    ts = body.get("ts")
    ts = ts if type(ts) is int and ts >= 0 else None
    actor = body.get("actor") if isinstance(body.get("actor"), str) else None
    audited = body.get("audited") is True
    obj = body.get("object")
    if obj is None:
        return _Proposal(kind, object_id, op, expected, revision, None, ts=ts, actor=actor, audited=audited)
    if not isinstance(obj, dict) or not isinstance(obj.get("versions"), dict):
        raise _Malformed('object must be null or {"versions": {...}}')
    versions, digests = _archived_versions(kind, object_id, obj.get("archive"), lookup)
    for n, doc in obj["versions"].items():
        if not (isinstance(n, str) and (parse_uint(n) or 0) >= 1):
            raise _Malformed(f"version key {n!r} is not a positive integer")
        if not isinstance(doc, dict):
            raise _Malformed(f"version {n} is not an object")
        if doc.get("status") not in STATUSES:
            raise _Malformed(f"version {n} has invalid status {doc.get('status')!r}")
        if int(n) in versions:
            raise _Malformed(f"version {n} is both inline and archived")
        versions[int(n)] = doc
    if not versions:
        raise _Malformed("object has no versions")
    versions = dict(sorted(versions.items()))  # the same order whichever layout carried them
    if sum(1 for d in versions.values() if d["status"] == "draft") > 1:
        raise _Malformed("more than one draft")
    if sum(1 for d in versions.values() if d["status"] == "active") > 2:
        raise _Malformed("more than two active versions")
    releases = obj.get("releases") or {}
    if not isinstance(releases, dict) or not all(
        isinstance(r, dict) and isinstance(r.get("events"), list) for r in releases.values()
    ):
        raise _Malformed('releases must be {"<id>": {"events": [...], ...}}')
    return _Proposal(kind, object_id, op, expected, revision, versions, releases, digests, ts, actor, audited)


def _content_hash(kind: str, object_id: str, definition: Mapping[str, Any]) -> str:
    raw = orjson.dumps([kind, object_id, definition], option=orjson.OPT_SORT_KEYS)
    return hashlib.blake2b(raw, digest_size=16).hexdigest()


@dataclass
class ConfigState:
    """The folded config: every object by (kind, id). Mutated only through `apply`."""

    compiler: Compiler = default_compiler
    offset: int = -1  # offset of the last record seen (any record)
    generation: int = 0  # bumped on every applied proposal: snapshots rebuild only when it moves
    _objects: dict[tuple[str, str], ObjectState] = field(default_factory=dict)
    _cache: dict[str, CompileResult] = field(default_factory=dict)
    _archive: dict[str, dict[str, Any]] = field(default_factory=dict)  # archive records by key
    _policy_generation: int = 0  # bumped when a policy object changes
    _policy_cache: tuple[int, list[tuple[str, Any]]] | None = None

    # -- the fold ---------------------------------------------------------------------------------
    def apply(
        self, offset: int, key: bytes | str | None, value: bytes | None, timestamp_ms: int | None = None
    ) -> Outcome:
        """Fold one record. Deterministic: depends only on the records seen so far, in offset order."""
        del timestamp_ms  # deliberately unused: broker time differs between a log and its copy
        self.offset = max(self.offset, offset)
        if key is None:
            return Outcome("ignored", "record has no key", offset)
        if isinstance(key, bytes):
            try:
                key = key.decode()
            except UnicodeDecodeError:
                return Outcome("ignored", "key is not UTF-8", offset)
        if key.startswith(MARKER_PREFIX):
            return Outcome("ignored", "marker", offset, key)
        if key.startswith(RUNTIME_PREFIX):
            return Outcome("ignored", "runtime", offset, key)
        if value is None:
            return Outcome("ignored", "tombstone", offset, key)
        if key.startswith(ARCHIVE_PREFIX):
            return self._archive_record(offset, key, value)
        try:
            p = _parse(key, value, self._archive.get)
        except _Malformed as exc:
            return Outcome("ignored", f"malformed: {exc}", offset, key)
        except Exception as exc:  # the fold is total: a record nobody foresaw must not stop every reader
            return Outcome("ignored", f"malformed: {type(exc).__name__}: {str(exc)[:200]}", offset, key)
        current = self._objects.get((p.kind, p.id))
        current_revision = current.revision if current is not None else 0
        if p.expected_revision < current_revision:
            return Outcome(
                "rejected",
                f"stale: expected revision {p.expected_revision}, current is {current_revision}",
                offset,
                key,
                p.kind,
                p.id,
                p.revision,
            )
        try:
            refusal = self._governed(p, current)
        except Exception as exc:  # a release history the checks cannot read: refused, by every reader alike
            refusal = f"release policy check failed: {type(exc).__name__}: {str(exc)[:200]}"
        if refusal is not None:
            return Outcome("refused", refusal, offset, key, p.kind, p.id, p.revision, p.actor, p.audited)
        if p.versions is None:
            new = ObjectState(p.kind, p.id, p.revision, {}, {}, key, offset, deleted=True)
        else:
            before = current.versions if current is not None else {}
            compiled = {
                # an archived version the object already held is the same document: its result stands
                n: current.compiled[n]
                if current is not None and before.get(n) is doc
                else self._compile(p.kind, p.id, doc)
                for n, doc in p.versions.items()
            }
            new = ObjectState(
                p.kind,
                p.id,
                p.revision,
                p.versions,
                compiled,
                key,
                offset,
                releases=p.releases,
                archive_digests=p.archive_digests,
            )
        self._objects[(p.kind, p.id)] = new
        self.generation += 1
        if p.kind == "policy":
            self._policy_generation += 1
        return Outcome("applied", p.op, offset, key, p.kind, p.id, p.revision, p.actor, p.audited)

    def _archive_record(self, offset: int, key: str, value: bytes) -> Outcome:
        """Keep an archive record whose key names its content's digest (a proposal may refer to it)."""
        if _digest(value) != key.rpartition(".")[2]:
            return Outcome("ignored", "malformed: archive record does not match the digest in its key", offset, key)
        try:
            body = orjson.loads(value)
        except orjson.JSONDecodeError:
            return Outcome("ignored", "malformed: archive record is not JSON", offset, key)
        if not isinstance(body, dict):
            return Outcome("ignored", "malformed: archive record is not a JSON object", offset, key)
        self._archive[key] = body
        return Outcome("ignored", "archive", offset, key)

    def has_record(self, key: str) -> bool:
        """An archive record with `key` was folded (a writer need not write it again)."""
        return key in self._archive

    def _governed(self, p: _Proposal, current: ObjectState | None) -> str | None:
        """Release policies (config_store/releases.py): why `p` is refused, or None."""
        if p.kind not in RELEASE_KINDS or p.op == "restore":
            return None  # restore is disaster recovery: admin-only and audited
        follows = p.expected_revision == (current.revision if current is not None else 0)
        if not follows:
            return None  # compaction removed the proposals in between: this one was judged when first folded
        live = current if current is not None and not current.deleted else None
        if p.versions is None:  # delete
            return self.policy_refusal(p.kind, p.id, live, None, {}, p.op, p.ts)
        return self.policy_refusal(p.kind, p.id, live, p.versions, p.releases, p.op, p.ts)

    def policy_refusal(
        self,
        kind: str,
        object_id: str,
        live: ObjectState | None,
        versions: Mapping[int, Mapping[str, Any]] | None,
        releases: Mapping[str, Mapping[str, Any]],
        op: str,
        ts: int | None,
    ) -> str | None:
        """The fold's release-policy decision for a change of (kind, id); writers call it before proposing."""
        if kind not in RELEASE_KINDS:
            return None
        prev_versions = live.versions if live is not None else {}
        tags: set[str] = set()
        for d in [*prev_versions.values(), *(versions or {}).values()]:
            if isinstance(d.get("tags"), list):
                tags.update(t for t in d["tags"] if isinstance(t, str))
        policy = effective_policy(self.policies(), kind, object_id, tags)
        if versions is None:
            if policy is not None and active_set(prev_versions):
                return (
                    f"{kind} '{object_id}' has active versions under release policy {', '.join(policy.names)}: "
                    "archive it through a release first"
                )
            return None
        proposed = Proposed(kind, object_id, op, 0, versions, releases, ts)
        return check_proposal(proposed, prev_versions, live.releases if live is not None else {}, policy)

    def policies(self) -> list[tuple[str, Any]]:
        """(name, ReleasePolicyDoc) of every active, valid release policy."""
        if self._policy_cache is None or self._policy_cache[0] != self._policy_generation:
            found = []
            for o in self.objects("policy"):
                for n in o.active:
                    if o.compiled[n].valid:
                        found.append((o.id, o.compiled[n].compiled))
            self._policy_cache = (self._policy_generation, found)
        return self._policy_cache[1]

    def _compile(self, kind: str, object_id: str, doc: Mapping[str, Any]) -> CompileResult:
        definition = definition_of(kind, doc)
        h = _content_hash(kind, object_id, definition)
        result = self._cache.get(h)
        if result is None:
            try:
                result = self.compiler(kind, object_id, definition)
            except Exception as exc:
                result = CompileResult(errors=_errors_of(exc))
            self._cache[h] = result
            self._prune_cache()
        return result

    def _prune_cache(self) -> None:
        # Keep only results some live version still uses, once the cache outgrows the live set.
        live = sum(len(o.versions) for o in self._objects.values())
        if len(self._cache) <= 2 * live + 64:
            return
        keep = {
            _content_hash(o.kind, o.id, definition_of(o.kind, d))
            for o in self._objects.values()
            for d in o.versions.values()
        }
        self._cache = {h: r for h, r in self._cache.items() if h in keep}

    def compile(self, kind: str, object_id: str, doc: Mapping[str, Any]) -> CompileResult:
        """Compile a (stored or candidate) version document through the same cached path as the fold."""
        return self._compile(kind, object_id, doc)

    # -- reads --------------------------------------------------------------------------------------
    def get(self, kind: str, object_id: str) -> ObjectState | None:
        """The live object, or None if it never existed or was deleted."""
        obj = self._objects.get((kind, object_id))
        return None if obj is None or obj.deleted else obj

    def get_any(self, kind: str, object_id: str) -> ObjectState | None:
        """Like `get`, but deleted objects are returned too (their revision matters to writers)."""
        return self._objects.get((kind, object_id))

    def revision_of(self, kind: str, object_id: str) -> int:
        obj = self._objects.get((kind, object_id))
        return obj.revision if obj is not None else 0

    def objects(self, kind: str | None = None) -> list[ObjectState]:
        """Live objects (of `kind`), sorted by (kind, id)."""
        return [o for k, o in sorted(self._objects.items()) if not o.deleted and (kind is None or k[0] == kind)]

    def fingerprint(self) -> str:
        """Digest of the whole folded state: equal on two readers iff they hold the same config."""
        view = [o.to_json() for _, o in sorted(self._objects.items())]
        return hashlib.sha256(orjson.dumps(view, option=orjson.OPT_SORT_KEYS)).hexdigest()

    def apply_all(self, records: Iterable[tuple[int, bytes | str | None, bytes | None]]) -> list[Outcome]:
        """Fold a batch of (offset, key, value) records."""
        return [self.apply(o, k, v) for o, k, v in records]
