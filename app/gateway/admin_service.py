"""The admin use cases (Orion's admin API) over the config topic, independent of HTTP.

`AdminService` turns admin requests into lifecycle operations (`app.config_store.operations`) written
through the `ConfigWriter` (optimistic concurrency, returns once applied), and answers reads from the
folded config state. The HTTP router (`app/gateway/admin.py`) and the CLI's direct mode both use it.

Results are plain JSON-ready dicts in Orion's shapes; connectors are masked here, so no caller can
forget it. Errors are `app.errors` exceptions (400 / 404 / 409 ...), mapped to HTTP in one place.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from app.channels import CompiledChannel
from app.config_store import operations as ops
from app.config_store.reader import ConfigReader
from app.config_store.rulesets import call_problems, check_activation, ruleset_catalog
from app.config_store.state import KINDS, STATUSES, ConfigState, ObjectState, definition_of, id_field
from app.config_store.writer import BACKUP_FORMAT, ConfigWriter
from app.errors import BadRequest, Conflict, NotFound, QuasarError, TestSuiteFailed, ValidationFailed
from app.gateway.routing import RouteTable, ambiguous_with
from app.secrets import mask_secrets, masked_paths, unmask_with
from app.settings import Settings

__all__ = ["BACKUP_FORMAT", "AdminService", "Page", "ensure_channel_topic_for"]

# Every kind may hold secrets (connector credentials, a channel's api_keys, an http_call task's inline
# headers): masked on read, and a masked value sent back on write keeps the stored secret. API-key
# records hold only hashes, which a backup must carry to restore them (their routes never show them).
_MASKED_KINDS = tuple(kind for kind in KINDS if kind != "apikey")


_DEFAULT_LIMIT = 50
# Fields the API adds to a view; a client sending a view back (GET -> edit -> PUT, export -> import)
# must not store them as part of its definition.
_VIEW_ONLY = ("revision", "valid", "validation_errors")
_MAX_LIMIT = 1000


Page = dict[str, Any]


def _now_iso() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _page(items: list[dict[str, Any]], limit: int | None, offset: int | None) -> Page:
    lim = _DEFAULT_LIMIT if limit is None else limit
    off = 0 if offset is None else offset
    if lim < 1 or lim > _MAX_LIMIT:
        raise BadRequest(f"limit must be between 1 and {_MAX_LIMIT}, got {lim}")
    if off < 0:
        raise BadRequest(f"offset must be >= 0, got {off}")
    return {"data": items[off : off + lim], "total": len(items), "limit": lim, "offset": off}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise BadRequest(f"unknown kind {kind!r}")


def _check_status(status: str | None) -> None:
    if status is not None and status not in STATUSES:
        raise BadRequest(f"status must be one of {', '.join(STATUSES)}, got {status!r}")


class AdminService:
    """Orion's admin operations on top of a config reader (the fold) and writer (the topic)."""

    def __init__(
        self,
        reader: ConfigReader,
        writer: ConfigWriter,
        settings: Settings | None = None,
        *,
        audit_source: Callable[[], Awaitable[list[dict[str, Any]]]] | None = None,
        ensure_topic: Callable[[CompiledChannel], Awaitable[None]] | None = None,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.settings = settings or Settings()
        self._audit_source = audit_source
        self._ensure_topic = ensure_topic
        self.started_at = time.time()

    # -- reads ----------------------------------------------------------------------------------------
    @property
    def state(self) -> ConfigState:
        return self.reader.state

    def _object(self, kind: str, object_id: str) -> ObjectState:
        obj = self.state.get(kind, object_id)
        if obj is None and kind == "connector":
            # Workflows reference connectors by name; let the admin API find them by name too.
            obj = next((o for o in self.state.objects(kind) if _latest_doc(o).get("name") == object_id), None)
        if obj is None:
            raise NotFound(f"{kind.capitalize()} with id '{object_id}' not found")
        return obj

    def view(self, obj: ObjectState, version: int | None = None) -> dict[str, Any]:
        """One version of an object as the API returns it (latest by default; connectors masked)."""
        n = obj.latest if version is None else version
        if n is None or n not in obj.versions:
            raise NotFound(f"{obj.kind.capitalize()} '{obj.id}' has no version {version}")
        doc: dict[str, Any] = {id_field(obj.kind): obj.id, **dict(obj.versions[n])}
        # The object's revision: send it back as `If-Match` to make a write fail (409) if it moved on.
        doc["revision"] = obj.revision
        if obj.kind == "connector":
            doc.setdefault("id", obj.id)
        if obj.kind in _MASKED_KINDS:
            doc = mask_secrets(doc)
        errors = obj.errors_of(n)
        if errors:
            # Stored but not loadable: say so instead of letting activation fail silently (Orion drops it).
            doc["valid"] = False
            doc["validation_errors"] = [dict(e) for e in errors]
        return doc

    def _select(self, obj: ObjectState, status: str | None) -> int | None:
        if status is None:
            return obj.latest
        matching = obj.by_status(status)
        return matching[0] if matching else None

    def list_page(
        self,
        kind: str,
        *,
        status: str | None = None,
        tag: str | None = None,
        filters: Mapping[str, str | None] | None = None,
        limit: int | None = None,
        offset: int | None = None,
    ) -> Page:
        """Latest version of each object (or its newest version with `status`), filtered, paginated."""
        return _page(self.select(kind, status=status, tag=tag, filters=filters), limit, offset)

    def select(
        self,
        kind: str,
        *,
        status: str | None = None,
        tag: str | None = None,
        filters: Mapping[str, str | None] | None = None,
    ) -> list[dict[str, Any]]:
        _check_kind(kind)
        _check_status(status)
        out = []
        for obj in self.state.objects(kind):
            n = self._select(obj, status)
            if n is None:
                continue
            doc = obj.versions[n]
            if tag is not None and tag not in (doc.get("tags") or []):
                continue
            if filters and any(v is not None and doc.get(k) != v for k, v in filters.items()):
                continue
            out.append(self.view(obj, n))
        return out

    def get(self, kind: str, object_id: str, version: int | None = None) -> dict[str, Any]:
        _check_kind(kind)
        return self.view(self._object(kind, object_id), version)

    def versions(self, kind: str, object_id: str, *, limit: int | None = None, offset: int | None = None) -> Page:
        """Version history, newest first."""
        obj = self._object(kind, object_id)
        return _page([self.view(obj, n) for n in sorted(obj.versions, reverse=True)], limit, offset)

    # -- writes ---------------------------------------------------------------------------------------
    async def _apply(
        self, kind: str, object_id: str, op: ops.Operation, actor: str, expected: int | None = None
    ) -> ObjectState | None:
        # Returns once the proposal is folded by this process's reader (stale -> Conflict 409).
        result = await self.writer.apply(kind, object_id, op, actor=actor, expected_revision=expected)
        obj: ObjectState | None = getattr(result, "object", None)
        return obj if obj is not None else self.state.get(kind, object_id)

    async def _apply_view(
        self,
        kind: str,
        object_id: str,
        op: ops.Operation,
        actor: str,
        version: Callable[[ObjectState], int | None] | None = None,
        expected: int | None = None,
    ) -> dict[str, Any]:
        obj = await self._apply(kind, object_id, op, actor, expected)
        if obj is None:
            raise NotFound(f"{kind.capitalize()} with id '{object_id}' not found")
        return self.view(obj, version(obj) if version else None)

    def _id_of(self, kind: str, body: Mapping[str, Any]) -> str:
        for key in (id_field(kind), "id") + (("name",) if kind == "connector" else ()):
            value = body.get(key)
            if value is not None and value != "":
                if not isinstance(value, str):
                    raise BadRequest(f"{key} must be a string")
                return value
        return str(uuid.uuid4())

    def check_definition(self, kind: str, body: Mapping[str, Any], object_id: str | None = None) -> None:
        """400 for what the store would accept but Orion refuses (a blank name) and for a channel whose
        route clashes with an active one. Whether the definition compiles is checked by the writer, with
        every error listed (Orion quirk 8: fail at create)."""
        name = body.get("name")
        if kind == "connector" and name is None:
            return
        if not isinstance(name, str) or not name.strip():
            raise ValidationFailed("name is required and must not be blank")
        if len(name) > 255:
            raise ValidationFailed("name must be at most 255 characters")
        if kind == "channel":
            self._check_route(object_id or name, body)

    def _check_route(self, object_id: str, body: Mapping[str, Any]) -> None:
        """A route pattern that active channels' patterns make ambiguous is refused (400). The candidate is
        compiled once (the writer reuses the result); one that does not compile is left to the writer,
        which names every field."""
        result = self.state.compile("channel", object_id, body)
        channel = result.compiled if result.valid else None
        if not isinstance(channel, CompiledChannel) or channel.route is None:
            return
        (entry,) = RouteTable.of([channel]).entries or (None,)
        if entry is None:
            return  # not a sync REST/HTTP route
        active = RouteTable.of(view.channel for view in self.reader.snapshot.channels.values())
        clash = ambiguous_with(entry, active.entries)
        if clash is not None:
            raise ValidationFailed(
                f"route_pattern '{channel.route.pattern}' matches the same requests as channel '{clash.channel}' "
                "with the same priority: give one a higher priority or a more specific pattern"
            )

    def _prepare(self, kind: str, body: Any, object_id: str | None = None) -> tuple[str, dict[str, Any]]:
        if not isinstance(body, Mapping):
            raise BadRequest(f"{kind} definition must be a JSON object")
        object_id = object_id or self._id_of(kind, body)
        doc = {k: v for k, v in body.items() if k not in ("id", id_field(kind), *_VIEW_ONLY)}
        if kind in _MASKED_KINDS:
            stored = self.state.get(kind, object_id)
            if stored is not None and stored.latest is not None:
                # A client that read a masked connector and sends it back keeps the real secrets.
                doc = unmask_with(doc, dict(stored.versions[stored.latest]))
        self.check_definition(kind, doc, object_id)
        return object_id, doc

    async def create(self, kind: str, body: Any, *, actor: str) -> dict[str, Any]:
        """Create version 1 (draft; connectors are active at once). 409 if the id exists."""
        _check_kind(kind)
        object_id, doc = self._prepare(kind, body)
        return await self._apply_view(kind, object_id, ops.Create(doc), actor)

    async def update(
        self, kind: str, object_id: str, body: Any, *, actor: str, expected: int | None = None
    ) -> dict[str, Any]:
        """Replace the draft (workflows, channels) or add a new connector version."""
        _check_kind(kind)
        self._object(kind, object_id)
        if isinstance(body, Mapping):
            given = body.get(id_field(kind)) or body.get("id")
            if given is not None and given != object_id:
                raise BadRequest(f"{id_field(kind)} {given!r} in the body does not match the path id {object_id!r}")
        object_id, doc = self._prepare(kind, body, object_id)
        return await self._apply_view(kind, object_id, ops.Update(doc), actor, expected=expected)

    async def delete(self, kind: str, object_id: str, *, actor: str, expected: int | None = None) -> None:
        _check_kind(kind)
        obj = self._object(kind, object_id)
        await self.writer.apply(kind, obj.id, ops.Delete(), actor=actor, expected_revision=expected)

    async def set_status(
        self, kind: str, object_id: str, body: Any, *, actor: str, expected: int | None = None
    ) -> dict[str, Any]:
        """PATCH /status: `{"status": "active", "rollout_percentage"?}` or `{"status": "archived"}`."""
        if not isinstance(body, Mapping):
            raise BadRequest('body must be a JSON object like {"status": "active"}')
        status = body.get("status")
        obj = self._object(kind, object_id)
        if status == "active":
            p = body.get("rollout_percentage", 100)
            suite = await self.prepare_activation(kind, obj)
            op: ops.Operation = ops.Activate(p if p is not None else 100, test_suite=suite)
        elif status == "archived":
            op = ops.Archive()
        else:
            raise BadRequest(f"status must be 'active' or 'archived', got {status!r}")
        return await self._apply_view(kind, obj.id, op, actor, _changed_version(op), expected)

    async def new_version(
        self, kind: str, object_id: str, *, actor: str, expected: int | None = None
    ) -> dict[str, Any]:
        """POST /versions: copy the latest version into a new draft (409 if a draft exists)."""
        obj = self._object(kind, object_id)
        return await self._apply_view(kind, obj.id, ops.NewVersion(), actor, lambda o: o.draft, expected)

    async def rollout(
        self, kind: str, object_id: str, body: Any, *, actor: str, expected: int | None = None
    ) -> dict[str, Any]:
        if not isinstance(body, Mapping) or "rollout_percentage" not in body:
            raise BadRequest('body must be a JSON object like {"rollout_percentage": 50}')
        obj = self._object(kind, object_id)
        return await self._apply_view(
            kind,
            obj.id,
            ops.Rollout(body["rollout_percentage"]),
            actor,
            lambda o: o.active[0] if o.active else None,
            expected,
        )

    async def rollback(
        self, kind: str, object_id: str, body: Any, *, actor: str, expected: int | None = None
    ) -> dict[str, Any]:
        if not isinstance(body, Mapping) or type(body.get("version")) is not int:
            raise BadRequest('body must be a JSON object like {"version": 1}')
        obj = self._object(kind, object_id)
        op = ops.Rollback(body["version"], body.get("rollout_percentage", 100))
        return await self._apply_view(kind, obj.id, op, actor, lambda o: o.latest, expected)

    # -- workflows: test, validate, import/export -----------------------------------------------------
    def test(self, object_id: str, body: Any, version: int | None = None) -> dict[str, Any]:
        """Dry-run a workflow version (the draft if there is one, else the latest) on sample data."""
        data, metadata = _sample(body)
        compiled = self._compiled("workflow", object_id, version)
        from app.engine import dry_run

        return dict(dry_run(compiled, data, metadata, rulesets=ruleset_catalog(self.state)))

    # -- test suites ----------------------------------------------------------------------------------
    def test_suite(self, kind: str, object_id: str, body: Any, version: int | None = None) -> dict[str, Any]:
        """POST /{workflows|rulesets}/{id}/test-suite: run the version's cases (its `tests` and every active
        `testsuite` naming it), or the body's `tests` only, offline."""
        if kind not in ("workflow", "ruleset"):
            raise BadRequest(f"{kind}s have no test suites")
        if body is not None and not isinstance(body, Mapping):
            raise BadRequest('body must be a JSON object like {"tests": [...]} (or empty)')
        obj, n = self._version(kind, object_id, version)
        given = body.get("tests") if isinstance(body, Mapping) else None
        tests = given if given is not None else self._cases(kind, obj, n)
        if not tests:
            raise BadRequest(
                f"{kind} '{object_id}' v{n} has no tests: add a `tests` list to the version, a testsuite, or the body"
            )
        return self._run_suite(kind, obj, n, tests)

    def _cases(self, kind: str, obj: ObjectState, n: int) -> list[Any]:
        """The version's own `tests`, then the cases of every active `testsuite` targeting the object
        (named `<suite id>: <case name>`). A malformed `tests` list is kept as is: the run reports it."""
        own = obj.versions[n].get("tests")
        if own is not None and not isinstance(own, list):
            return [own]  # run_suite reports the malformed list as a failing case
        cases: list[Any] = list(own or [])
        for suite in self.state.objects("testsuite"):
            result = suite.compiled.get(suite.active[0]) if suite.active else None
            doc = result.compiled if result is not None and result.valid else None
            if doc is None or (doc.kind, doc.target) != (kind, obj.id):
                continue
            cases += [{**case, "name": f"{suite.id}: {case.get('name')}"} for case in doc.tests]
        return cases

    def _run_suite(self, kind: str, obj: ObjectState, n: int, tests: Any) -> dict[str, Any]:
        from app.engine.rules.testsuite import content_digest, run_suite

        compiled = self._compiled(kind, obj.id, n)
        digest = content_digest(definition_of(kind, obj.versions[n]))
        return run_suite(compiled, tests, catalog=ruleset_catalog(self.state), digest=digest)

    async def prepare_activation(self, kind: str, obj: ObjectState) -> dict[str, Any] | None:
        """What must happen before the draft goes live, however it is activated (PATCH /status or a release):
        a channel's topics exist; the draft's test suite passes (its result is returned, to be recorded)."""
        if kind == "channel" and obj.draft is not None and self._ensure_topic is not None:
            # Create its topics before the channel goes live, so the first request has a home.
            compiled = obj.compiled.get(obj.draft)
            if compiled is not None and isinstance(compiled.compiled, CompiledChannel):
                await self._ensure_topic(compiled.compiled)
        return self._activation_suite(kind, obj)

    def _activation_suite(self, kind: str, obj: ObjectState) -> dict[str, Any] | None:
        """Run the draft's suite before activating it; refuse (400 TEST_SUITE_FAILED) when it fails and the
        policy requires passing tests. Returns the summary recorded on the activated version."""
        n = obj.draft
        if kind not in ("workflow", "ruleset") or n is None:
            return None
        tests = self._cases(kind, obj, n)
        if not tests or not self.settings.require_passing_tests:
            return None
        result = obj.compiled.get(n)
        if result is None or not result.valid:
            return None  # the writer refuses an invalid version with its field errors
        if kind == "ruleset":  # unresolvable calls first: they would fail every case
            check_activation(self.state, obj.id, n, result.compiled)
        report = self._run_suite(kind, obj, n, tests)
        if not report["ok"]:
            failed = [c for c in report["cases"] if not c["passed"]]
            raise TestSuiteFailed(
                f"{kind} '{obj.id}' v{n}: {report['failed']} of {report['total']} tests failed ("
                + "; ".join(f"{c['name']}: {c['failures'][0]}" for c in failed[:3])
                + "); fix them or set QUASAR_REQUIRE_PASSING_TESTS=false",
                details=report,
            )
        return {
            "digest": report["digest"],
            "total": report["total"],
            "passed": report["passed"],
            "failed": report["failed"],
            "ran_at": _now_iso(),
        }

    # -- rulesets: validate and dry-run ---------------------------------------------------------------
    def validate_ruleset(self, body: Any) -> dict[str, Any]:
        """POST /rulesets/validate: graph checks now; call checks (which need the config) as warnings."""
        if not isinstance(body, Mapping):
            raise BadRequest("ruleset definition must be a JSON object")
        from app.engine.rules import analyse_ruleset

        object_id = self._id_of("ruleset", body)
        compiled, errors = analyse_ruleset(dict(body), object_id)
        warnings: list[str] = []
        if compiled is not None:
            warnings = [f"activation would fail: {p['message']}" for p in call_problems(self.state, compiled)]
        name = body.get("name")
        if not isinstance(name, str) or not name.strip():
            errors = [{"field": "name", "message": "name is required and must not be blank"}, *errors]
        return {"valid": not errors, "errors": errors, "warnings": warnings}

    def test_ruleset(self, object_id: str, body: Any, version: int | None = None) -> dict[str, Any]:
        """Dry-run a ruleset version (the draft if there is one, else the latest) with its decision path."""
        data, metadata = _sample(body)
        compiled = self._compiled("ruleset", object_id, version)
        from app.engine.rules.testsuite import run_ruleset

        return run_ruleset(compiled, data, metadata, ruleset_catalog(self.state))

    def _version(self, kind: str, object_id: str, version: int | None) -> tuple[ObjectState, int]:
        """The object and the version to run: `version`, else the draft, else the latest (404 if none)."""
        obj = self._object(kind, object_id)
        n = version if version is not None else (obj.draft or obj.latest)
        if n is None or n not in obj.versions:
            raise NotFound(f"{kind.capitalize()} '{object_id}' has no version {n}")
        return obj, n

    def _compiled(self, kind: str, object_id: str, version: int | None) -> Any:
        """The compiled version to run; 400 with its field errors when it does not compile."""
        obj, n = self._version(kind, object_id, version)
        result = obj.compiled.get(n)
        if result is None or not result.valid:
            errors = [dict(e) for e in (result.errors if result else ())]
            raise ValidationFailed(f"{kind} '{object_id}' v{n} is invalid and cannot run", details=errors)
        compiled = result.compiled
        return compiled.at_version(n) if kind == "ruleset" else compiled

    def validate(self, body: Any) -> dict[str, Any]:
        """POST /workflows/validate: `{"valid", "errors", "warnings"}` without storing anything."""
        if not isinstance(body, Mapping):
            raise BadRequest("workflow definition must be a JSON object")
        report = dict(validate_definition(body))
        errors = list(report.get("errors", []))
        warnings = list(report.get("warnings", []))
        name = body.get("name")
        if (not isinstance(name, str) or not name.strip()) and not any(e.get("field") == "name" for e in errors):
            errors.insert(0, {"field": "name", "message": "name is required and must not be blank"})
        # Connector references against the connectors that exist now: a wrong type or driver can never
        # work (error, Orion: 400 VALIDATION_ERROR); a missing one may still be created (warning).
        for problem in connector_problems(body, self.state):
            (warnings if problem.pop("missing") else errors).append(problem)
        report.update(valid=not errors, errors=errors, warnings=warnings)
        return report

    def validate_channel(self, body: Any) -> dict[str, Any]:
        """POST /channels/validate: `{"valid", "errors", "warnings"}` through the same compile step as a
        write (so it shows exactly the field errors a create or update would get), storing nothing."""
        if not isinstance(body, Mapping):
            raise BadRequest("channel definition must be a JSON object")
        object_id = self._id_of("channel", body)
        doc = {k: v for k, v in body.items() if k not in ("id", id_field("channel"), *_VIEW_ONLY)}
        result = self.state.compile("channel", object_id, doc)
        return {"valid": result.valid, "errors": [dict(e) for e in result.errors], "warnings": []}

    def export(self, kind: str, *, status: str | None = None, tag: str | None = None) -> dict[str, Any]:
        return {"data": self.select(kind, status=status, tag=tag)}

    async def import_(
        self,
        kind: str,
        body: Any,
        *,
        actor: str,
        dry_run: bool = False,
        progress: Callable[[int, int], None] | None = None,
    ) -> dict[str, Any]:
        """Create each document as a new object (drafts). Per-item failures are reported, not raised.

        dry_run: check every item exactly as a create would (id free, definition compiles, no id twice
        in the batch) and report per item; nothing is written.
        """
        _check_kind(kind)
        items = _items_of(kind, body)
        imported, errors, results = 0, [], []
        seen: set[str] = set()
        for i, doc in enumerate(items):
            ident = _loose_id(kind, doc)
            try:
                if dry_run:
                    object_id, prepared = self._prepare(kind, doc)
                    if object_id in seen:
                        raise Conflict(f"{kind} '{object_id}' appears more than once in the import")
                    seen.add(object_id)
                    self.writer.check(kind, object_id, ops.Create(prepared))
                    ident = object_id
                else:
                    ident = (await self.create(kind, doc, actor=actor)).get(id_field(kind), ident)
                imported += 1
                results.append({"index": i, "id": ident, "ok": True})
            except QuasarError as exc:
                failure = {"index": i, "id": ident, "code": exc.code, "error": exc.message}
                if exc.details is not None:
                    failure["details"] = exc.details
                errors.append(failure)
                results.append({**failure, "ok": False})
            if progress is not None:
                progress(i + 1, len(items))
        report: dict[str, Any] = {"imported": 0 if dry_run else imported, "failed": len(errors), "errors": errors}
        if dry_run:
            report.update(dry_run=True, valid=imported, items=results)
        return report

    # -- engine, audit, backup ------------------------------------------------------------------------
    def engine_status(self) -> dict[str, Any]:
        workflows = self.state.objects("workflow")
        channels = self.state.objects("channel")
        active_workflows = [o for o in workflows if o.active]
        active_channels = sorted(o.id for o in channels if o.active)
        invalid = sum(1 for o in [*workflows, *channels] for n in o.active if o.errors_of(n))
        return {
            "version": _package_version(),
            "instance": self.settings.instance_id,
            "uptime_seconds": int(time.time() - self.started_at),
            "workflows_count": len(workflows),
            "active_workflows": len(active_workflows),
            "channels_count": len(channels),
            "active_channels": len(active_channels),
            "channels": active_channels,
            "connectors_count": len(self.state.objects("connector")),
            "rulesets_count": len(self.state.objects("ruleset")),
            "active_rulesets": sum(1 for o in self.state.objects("ruleset") if o.active),
            "invalid_active_versions": invalid,
            "config_offset": self.state.offset,
            "config_generation": self.state.generation,
            "hot_reload": "automatic (config topic)",
        }

    def reload(self) -> dict[str, Any]:
        """Orion's reload: nothing to do (every instance folds the config topic continuously)."""
        status = self.engine_status()
        return {"reloaded": True, "workflows_count": status["active_workflows"], **status}

    async def audit_logs(
        self, params: Mapping[str, str | None], *, limit: int | None = None, offset: int | None = None
    ) -> Page:
        entries = await self._audit_source() if self._audit_source is not None else []
        out = [e for e in entries if all(v is None or str(e.get(k)) == v for k, v in params.items())]
        out.sort(key=lambda e: e.get("offset", 0), reverse=True)  # newest first
        return _page(out, limit, offset)

    async def backup(self) -> dict[str, Any]:
        """The whole config (every live object, all versions), connector secrets masked."""
        doc = dict(await self.writer.backup())
        objects = []
        for entry in doc.get("objects", []):
            if entry.get("kind") in _MASKED_KINDS:
                entry = {**entry, "versions": mask_secrets(entry.get("versions", {}))}
            objects.append(entry)
        doc["objects"] = objects
        doc["counts"] = {k: sum(1 for o in objects if o.get("kind") == k) for k in KINDS}
        return doc

    async def restore(self, body: Any, *, actor: str, prune: bool = True) -> dict[str, Any]:
        """Make the config equal to a backup (objects not in it are deleted unless `prune` is off).

        The whole backup is checked before anything is written. Masked connector secrets keep the value
        stored now; a masked secret with nothing stored behind it refuses the whole restore (400, every
        such field listed) instead of writing the mask as the secret. Use `env://` references so a
        backup restores fully anywhere.
        """
        objects = _backup_objects(body)
        unresolved: list[str] = []
        for entry in objects:
            if entry["kind"] not in _MASKED_KINDS:
                continue
            current = self.state.get(entry["kind"], entry["id"])
            if current is not None:
                stored = {str(n): dict(d) for n, d in current.versions.items()}
                entry["versions"] = unmask_with(entry["versions"], stored)
            # A mask with no stored value behind it would be written as the secret itself.
            unresolved += [f"{entry['kind']}/{entry['id']} v{path}" for path in masked_paths(entry["versions"])]
        if unresolved:
            raise ValidationFailed(
                f"the backup holds {len(unresolved)} masked secret(s) with no stored value to keep "
                "(the object was deleted or the secret added since): re-enter them in the backup file, "
                "or use env://VAR references; nothing was restored",
                details={"masked_secrets": unresolved},
            )
        doc = {**dict(body), "objects": objects}
        results = await self.writer.restore(doc, actor=actor, replace=prune)
        restored = sum(1 for r in results if r.op == "restore" and r.changed)
        unchanged = sum(1 for r in results if r.op == "restore" and not r.changed)
        deleted = sum(1 for r in results if r.op == "delete")
        return {
            "restored": restored,
            "unchanged": unchanged,
            "deleted": deleted,
            "objects": len(objects),
            "config_offset": self.state.offset,
        }


# -- helpers ------------------------------------------------------------------------------------------
def _sample(body: Any) -> tuple[Any, dict[str, Any]]:
    """`(data, metadata)` of a dry-run body `{"data", "metadata"}` (empty when absent)."""
    if body is None:
        body = {}
    if not isinstance(body, Mapping):
        raise BadRequest('body must be a JSON object like {"data": {...}, "metadata": {...}}')
    metadata = body.get("metadata") or {}
    if not isinstance(metadata, Mapping):
        raise BadRequest("metadata must be a JSON object")
    return body.get("data", {}), dict(metadata)


def _changed_version(op: ops.Operation) -> Callable[[ObjectState], int | None]:
    if isinstance(op, ops.Activate):
        # The activated draft is now the newest active version.
        return lambda o: o.active[0] if o.active else o.latest
    return lambda o: o.latest


def _latest_doc(obj: ObjectState) -> Mapping[str, Any]:
    return obj.versions[obj.latest] if obj.latest is not None else {}


def _loose_id(kind: str, doc: Any) -> Any:
    if isinstance(doc, Mapping):
        return doc.get(id_field(kind)) or doc.get("id") or doc.get("name")
    return None


def _items_of(kind: str, body: Any) -> list[Any]:
    """Import bodies: a list, `{"data": [...]}` (what export returns) or `{"<kind>s": [...]}`."""
    if isinstance(body, Mapping):
        for key in ("data", f"{kind}s"):
            if isinstance(body.get(key), list):
                return list(body[key])
        raise BadRequest(f'import body must be a JSON array of {kind}s (or {{"data": [...]}} as exported)')
    if not isinstance(body, list):
        raise BadRequest(f"import body must be a JSON array of {kind}s")
    return body


def _backup_objects(body: Any) -> list[dict[str, Any]]:
    if not isinstance(body, Mapping) or not isinstance(body.get("objects"), list):
        raise BadRequest('restore body must be a backup: {"format": "' + BACKUP_FORMAT + '", "objects": [...]}')
    fmt = body.get("format")
    if fmt is not None and fmt != BACKUP_FORMAT:
        raise BadRequest(f"unsupported backup format {fmt!r}; expected {BACKUP_FORMAT!r}")
    out = []
    for i, entry in enumerate(body["objects"]):
        if (
            not isinstance(entry, Mapping)
            or entry.get("kind") not in KINDS
            or not isinstance(entry.get("id"), str)
            or not isinstance(entry.get("versions"), Mapping)
        ):
            raise BadRequest(f"backup object #{i} must be {{kind, id, versions}} with kind in {', '.join(KINDS)}")
        out.append({"kind": entry["kind"], "id": entry["id"], "versions": dict(entry["versions"])})
    return out


def connector_problems(body: Mapping[str, Any], state: ConfigState) -> list[dict[str, Any]]:
    """`[{field, message, missing}]` for tasks naming a connector that is missing (`missing`), disabled,
    or of the wrong type or driver for the function."""
    from app.connectors import check_connector_references

    connectors = {}
    for obj in state.objects("connector"):
        n = obj.active[0] if obj.active else obj.latest
        if n is not None:
            connectors[obj.id] = {"connector_id": obj.id, **definition_of("connector", obj.versions[n])}
    return [
        {"field": p["field"], "message": p["message"], "missing": p["problem"] == "missing"}
        for p in check_connector_references(body, connectors)
    ]


def validate_definition(body: Mapping[str, Any]) -> dict[str, Any]:
    """The engine's structural validation of a workflow definition."""
    from app.engine import validate_workflow

    return dict(validate_workflow(dict(body)))


def _package_version() -> str:
    from app import __version__

    return str(__version__)


async def ensure_channel_topic_for(settings: Settings, channel: CompiledChannel) -> None:
    """Create a channel's request topic and (async) output topic if missing, with the topic specs."""
    from app.kafka.admin import create_admin
    from app.kafka.topics import ensure_channel_topic, load_specs, spec_configs

    def run() -> None:
        specs = load_specs()
        admin = create_admin(settings)
        for name, role in ((channel.topic, "channel"), (channel.output_topic, "output")):
            if name is None:
                continue
            spec = specs[role]
            ensure_channel_topic(
                admin,
                name,
                spec.partitions or settings.default_partitions,
                configs=spec_configs(spec, settings),
                replication_factor=settings.replication_factor,
            )

    await asyncio.to_thread(run)
