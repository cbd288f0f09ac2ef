"""Test suites for workflows and rulesets, run offline on the pure engine.

A suite is the `tests` list of a workflow or ruleset version (or of a `testsuite` file naming one):

    {"name": "minor is rejected",
     "input": {"age": 17},                  # the request data (workflow) / the ruleset's `data`
     "metadata": {...},                     # optional
     "stubs": {"fetch_user": {"set": {"data.user": {"tier": "gold"}}, "status": 200}},
     "expect": {"code": "REJECTED", "data": {...}, "output": {...}, "message": "...", "errors": [...]}}

Side-effecting and connector-backed tasks never run in a suite: a task with a stub writes the stub's
`set` paths and returns its `status`; any other such task only records the call it would make.
Expectations: `code` is the ruleset's result code (for a workflow: the failed run's error code, else
the code of its last `rule` decision, else "OK"); `data` and `output` match as subsets (every given
key must be equal, extra keys are fine); `errors` is the exact list of error codes; `message` equal.

`run_suite` returns a JSON report with the version's content digest; `junit_xml` renders it for CI.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from xml.etree import ElementTree

import orjson

from app.engine.compiler import CompiledWorkflow, compile_workflow
from app.engine.executor import ChannelWorkflow, Engine, RunOptions
from app.engine.functions import shared_default_registry
from app.engine.jsonlogic import LogicError
from app.engine.message import Message
from app.engine.paths import compile_path, set_path
from app.engine.registry import FunctionRegistry, FunctionSpec, SyncFunction, TaskContext
from app.engine.rules.errors import FieldErrors
from app.engine.rules.ruleset import CompiledRuleset, RulesetLookup
from app.errors import QuasarError

__all__ = [
    "TestSuiteDoc",
    "TestSuiteInvalid",
    "check_cases",
    "compile_testsuite",
    "content_digest",
    "junit_xml",
    "run_ruleset",
    "run_suite",
    "stubbed_registry",
]

_EXPECT_KEYS = frozenset({"code", "data", "output", "message", "errors"})


class TestSuiteInvalid(FieldErrors):
    """A `testsuite` document with field errors."""

    __test__ = False  # not a pytest class
    what = "test suite"


@dataclass(frozen=True, slots=True)
class TestSuiteDoc:
    """A stored `testsuite` document: cases for the workflow or ruleset it targets (every version)."""

    __test__ = False
    kind: str
    target: str
    tests: tuple[Mapping[str, Any], ...]


def compile_testsuite(doc: Mapping[str, Any]) -> TestSuiteDoc:
    """Check a `{"name", "target": {"kind": "workflow"|"ruleset", "id"}, "tests": [...]}` document."""
    errors: list[dict[str, str]] = []
    target = doc.get("target")
    kind = target.get("kind") if isinstance(target, Mapping) else None
    target_id = target.get("id") if isinstance(target, Mapping) else None
    if kind not in ("workflow", "ruleset") or not isinstance(target_id, str) or not target_id:
        errors.append({"field": "target", "message": 'is required: {"kind": "workflow" | "ruleset", "id": "..."}'})
    tests = doc.get("tests")
    errors += check_cases(tests)
    if not errors and not tests:
        errors.append({"field": "tests", "message": "needs at least one case"})
    if errors:
        raise TestSuiteInvalid(errors)
    assert isinstance(kind, str) and isinstance(target_id, str) and isinstance(tests, list)
    return TestSuiteDoc(kind, target_id, tuple(tests))


def content_digest(definition: Mapping[str, Any]) -> str:
    """`sha256:<hex>` of a version's definition (canonical JSON, lifecycle fields excluded by the caller)."""
    raw = orjson.dumps(definition, option=orjson.OPT_SORT_KEYS | orjson.OPT_NON_STR_KEYS)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def check_cases(tests: Any) -> list[dict[str, str]]:
    """Field errors in a `tests` list (empty when every case is well formed)."""
    if not isinstance(tests, list):
        return [{"field": "tests", "message": "must be an array of {name, input, expect}"}]
    errors: list[dict[str, str]] = []
    names: set[str] = set()
    for i, case in enumerate(tests):
        base = f"tests[{i}]"
        if not isinstance(case, Mapping):
            errors.append({"field": base, "message": "must be an object {name, input, expect}"})
            continue
        name = case.get("name")
        if not isinstance(name, str) or not name:
            errors.append({"field": f"{base}.name", "message": "is required"})
        elif name in names:
            errors.append({"field": f"{base}.name", "message": f"duplicate test name {name!r}"})
        else:
            names.add(name)
        expect = case.get("expect")
        if not isinstance(expect, Mapping) or not expect:
            errors.append({"field": f"{base}.expect", "message": "is required: {code?, data?, output?, errors?}"})
        elif unknown := sorted(set(expect) - _EXPECT_KEYS):
            errors.append({"field": f"{base}.expect", "message": f"unknown key(s) {', '.join(unknown)}"})
        stubs = case.get("stubs", {})
        if not isinstance(stubs, Mapping) or any(not isinstance(s, Mapping) for s in stubs.values()):
            errors.append({"field": f"{base}.stubs", "message": "must be an object {task id: {set?, status?}}"})
        if case.get("metadata") is not None and not isinstance(case.get("metadata"), Mapping):
            errors.append({"field": f"{base}.metadata", "message": "must be an object"})
    return errors


# -- stubs ----------------------------------------------------------------------------------------------
class _Stubbed(SyncFunction):
    """Stands in for a side-effecting or connector task: applies the case's stub, else records the call."""

    __slots__ = ("function", "raw")

    def __init__(self, function: str, raw: Mapping[str, Any]) -> None:
        self.function = function
        self.raw = dict(raw)

    def run(self, message: Message, ctx: TaskContext) -> int:
        stubs = ctx.services if isinstance(ctx.services, Mapping) else {}
        stub = stubs.get(ctx.task_id)
        if ctx.calls is not None:
            ctx.calls.append({"task_id": ctx.task_id, "function": self.function, "stubbed": stub is not None})
        if stub is None:
            return 200
        changes = []
        for path, value in (stub.get("set") or {}).items():
            set_path(message.context, compile_path(str(path)), value)
            changes.append((str(path), None, value))
        ctx.changes = changes
        status = stub.get("status", 200)
        return status if type(status) is int else 200


def stubbed_registry(registry: FunctionRegistry | None = None) -> FunctionRegistry:
    """A copy of `registry` where every side-effecting or connector-backed function is a stub."""
    base = registry or shared_default_registry()
    out = base.copy()
    for name in base.names():
        spec = base.get(name)
        if spec is not None and (spec.side_effects or spec.needs_runtime):
            out.register(FunctionSpec(name, _stub_factory(name), side_effects=False), replace=True)
    return out


def _stub_factory(name: str) -> Any:
    def factory(raw: Mapping[str, Any]) -> _Stubbed:
        return _Stubbed(name, raw)

    return factory


# -- running --------------------------------------------------------------------------------------------
def run_ruleset(
    ruleset: CompiledRuleset,
    data: Any,
    metadata: Mapping[str, Any] | None = None,
    catalog: RulesetLookup | None = None,
) -> dict[str, Any]:
    """Dry-run a ruleset on `data`: `{"result", "data", "decisions"}` or `{"error", "data", "decisions"}`."""
    context: dict[str, Any] = {
        "data": data if isinstance(data, dict) else {"value": data},
        "metadata": dict(metadata or {}),
        "temp_data": {},
    }
    steps: list[dict[str, Any]] = []
    out: dict[str, Any] = {"ruleset": ruleset.id, "version": ruleset.version}
    try:
        out["result"] = ruleset.run(context, catalog, explain=steps)
    except QuasarError as exc:
        out["error"] = {"code": exc.code, "message": exc.message, "status": exc.status}
    except LogicError as exc:
        out["error"] = {"code": "EVALUATION_ERROR", "message": str(exc), "status": 422}
    out["data"] = context["data"]
    out["decisions"] = steps
    return out


def _subset(expected: Any, actual: Any, path: str, failures: list[str]) -> None:
    if isinstance(expected, Mapping) and isinstance(actual, Mapping):
        for key, value in expected.items():
            if key not in actual:
                failures.append(f"{path}.{key}: missing (expected {_short(value)})")
            else:
                _subset(value, actual[key], f"{path}.{key}", failures)
        return
    if expected != actual or (type(expected) is bool and type(actual) is not bool):
        failures.append(f"{path}: expected {_short(expected)}, got {_short(actual)}")


def _short(value: Any) -> str:
    text = orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    return text if len(text) <= 200 else text[:197] + "..."


def _compare(expect: Mapping[str, Any], actual: Mapping[str, Any]) -> list[str]:
    failures: list[str] = []
    if "code" in expect and expect["code"] != actual.get("code"):
        failures.append(f"code: expected {_short(expect['code'])}, got {_short(actual.get('code'))}")
    if "message" in expect and expect["message"] != actual.get("message"):
        failures.append(f"message: expected {_short(expect['message'])}, got {_short(actual.get('message'))}")
    if "data" in expect:
        _subset(expect["data"], actual.get("data"), "data", failures)
    if "output" in expect:
        _subset(expect["output"], actual.get("output"), "output", failures)
    if "errors" in expect:
        codes = actual.get("errors") or []
        wanted = [e.get("code") if isinstance(e, Mapping) else e for e in expect["errors"] or []]
        if wanted != codes:
            failures.append(f"errors: expected {_short(wanted)}, got {_short(codes)}")
    return failures


def _run_workflow_case(wf: CompiledWorkflow, case: Mapping[str, Any], catalog: RulesetLookup | None) -> dict[str, Any]:
    engine = Engine({"__test__": [ChannelWorkflow(wf)]}, rulesets=catalog)
    message = Message.from_request(case.get("input"), dict(case.get("metadata") or {}))
    message.explain = []
    opts = RunOptions(rollout_bucket=0, services=dict(case.get("stubs") or {}), calls=[])
    error: QuasarError | None = None
    try:
        if engine.is_sync("__test__"):
            engine.process_sync("__test__", message, opts)
        else:  # a custom asynchronous function: run it to completion here
            asyncio.run(engine.process("__test__", message, opts))
    except QuasarError as exc:
        error = exc
    decisions = [d for d in message.explain if "code" in d and "ruleset" in d]
    code = error.code if error is not None else (decisions[-1]["code"] if decisions else "OK")
    return {
        "code": code,
        "data": message.context["data"],
        "errors": [e.get("code") for e in message.errors],
        "decisions": message.explain,
        "calls": opts.calls,
        **({"error": {"code": error.code, "message": error.message}} if error is not None else {}),
    }


def _run_ruleset_case(rs: CompiledRuleset, case: Mapping[str, Any], catalog: RulesetLookup | None) -> dict[str, Any]:
    report = run_ruleset(rs, case.get("input") or {}, case.get("metadata"), catalog)
    result = report.get("result") or {}
    error = report.get("error")
    return {
        "code": error["code"] if error else result.get("code"),
        "message": result.get("message"),
        "output": result.get("output"),
        "data": report["data"],
        "errors": [error["code"]] if error else [],
        "decisions": report["decisions"],
        **({"error": error} if error else {}),
    }


def run_suite(
    target: CompiledWorkflow | CompiledRuleset,
    tests: Any,
    *,
    catalog: RulesetLookup | None = None,
    digest: str | None = None,
    registry: FunctionRegistry | None = None,
) -> dict[str, Any]:
    """Run every case; returns `{kind, id, version, digest, total, passed, failed, ok, cases: [...]}`.

    Workflows are recompiled once with stubbed side effects (`stubbed_registry`); a malformed suite
    is reported as one failing case per problem, so CI never passes a suite it could not read.
    """
    kind = "ruleset" if isinstance(target, CompiledRuleset) else "workflow"
    if kind == "workflow":
        assert isinstance(target, CompiledWorkflow)
        runnable: CompiledWorkflow | CompiledRuleset = compile_workflow(
            target.doc, stubbed_registry(registry or target.registry)
        )
    else:
        runnable = target
    cases: list[dict[str, Any]] = []
    problems = check_cases(tests)
    for p in problems:
        cases.append({"name": p["field"], "passed": False, "failures": [p["message"]], "duration_ms": 0.0})
    if not problems:
        for case in tests:
            started = time.perf_counter()
            if isinstance(runnable, CompiledRuleset):
                actual = _run_ruleset_case(runnable, case, catalog)
            else:
                actual = _run_workflow_case(runnable, case, catalog)
            failures = _compare(case["expect"], actual)
            cases.append(
                {
                    "name": case["name"],
                    "passed": not failures,
                    "failures": failures,
                    "duration_ms": round((time.perf_counter() - started) * 1000, 3),
                    "actual": {
                        k: v for k, v in actual.items() if k in ("code", "message", "output", "errors", "error")
                    },
                    **({"decisions": actual["decisions"]} if failures else {}),
                }
            )
    passed = sum(1 for c in cases if c["passed"])
    return {
        "kind": kind,
        "id": target.id,
        "version": target.version,
        "digest": digest,
        "total": len(cases),
        "passed": passed,
        "failed": len(cases) - passed,
        "ok": passed == len(cases),
        "cases": cases,
    }


def junit_xml(reports: list[dict[str, Any]]) -> str:
    """JUnit XML (one <testsuite> per report) for CI test viewers."""
    root = ElementTree.Element("testsuites")
    for report in reports:
        suite = ElementTree.SubElement(
            root,
            "testsuite",
            name=f"{report['kind']}:{report['id']}" + (f"@v{report['version']}" if report.get("version") else ""),
            tests=str(report["total"]),
            failures=str(report["failed"]),
            errors="0",
            time=f"{sum(c.get('duration_ms', 0.0) for c in report['cases']) / 1000:.6f}",
        )
        if report.get("digest"):
            props = ElementTree.SubElement(suite, "properties")
            ElementTree.SubElement(props, "property", name="digest", value=str(report["digest"]))
        for case in report["cases"]:
            element = ElementTree.SubElement(
                suite,
                "testcase",
                classname=f"{report['kind']}.{report['id']}",
                name=str(case["name"]),
                time=f"{case.get('duration_ms', 0.0) / 1000:.6f}",
            )
            if not case["passed"]:
                failure = ElementTree.SubElement(
                    element, "failure", message=case["failures"][0] if case["failures"] else "failed"
                )
                failure.text = "\n".join(case["failures"])
    return ElementTree.tostring(root, encoding="unicode", xml_declaration=True)
