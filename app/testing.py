"""Helpers for testing your own workflows with Quasar's real engine (no broker needed).

    from app.testing import run_workflow, build_engine, send, assert_response, assert_steps

    def test_vip_orders_get_a_discount():
        response = run_workflow(my_workflow_doc, {"amount": 750})
        assert_response(response, data={"order": {"amount": 750, "tier": "vip"}}, partial=True)

    def test_channel_runs_all_matching_workflows():
        channels = [{"name": "orders", "workflow_ids": ["a", "b"]}]
        engine = build_engine(workflows=[wf_a, wf_b], channels=channels)
        assert send(engine, "orders", {"amount": 5})["errors"] == []

    def test_dry_run_trace():
        report = dry_run(my_workflow_doc, {"amount": 50000})
        assert_steps(report, executed=["parse", "high_risk"], skipped=["normal_risk"])

`run_workflow` / `send` return the sync HTTP body `{id, status, data, errors}`; a failed run raises
the same `app.errors.QuasarError` the gateway would map to a status code. `load_bundle` reads a
`{"workflows": [...], "channels": [...], "rulesets": [...]}` JSON file such as those in `docs/examples/`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from app.engine import (
    ChannelDoc,
    ChannelWorkflow,
    CompiledWorkflow,
    Engine,
    FunctionRegistry,
    Message,
    RunOptions,
    WorkflowDoc,
    compile_workflow,
    default_registry,
    dry_run,
)
from app.engine.rules import RulesetCatalog, compile_ruleset

__all__ = [
    "assert_no_errors",
    "assert_response",
    "assert_steps",
    "build_engine",
    "dry_run",
    "load_bundle",
    "ruleset_catalog",
    "run_workflow",
    "send",
]


def _compiled(doc: CompiledWorkflow | WorkflowDoc | Mapping[str, Any], registry: FunctionRegistry) -> CompiledWorkflow:
    return doc if isinstance(doc, CompiledWorkflow) else compile_workflow(doc, registry)


def build_engine(
    workflows: Iterable[CompiledWorkflow | WorkflowDoc | Mapping[str, Any]],
    channels: Iterable[ChannelDoc | Mapping[str, Any]],
    *,
    registry: FunctionRegistry | None = None,
    rulesets: Iterable[Mapping[str, Any]] = (),
) -> Engine:
    """An in-memory setup: compile the workflows and bind them to channels by id.

    Statuses are ignored (drafts run too) so tests need no activation step. A channel that names
    an unknown workflow raises `KeyError`. `rulesets` (documents with `ruleset_id` and optional
    `version`, default 1) are what `rule` tasks and `call` steps find.
    """
    reg = registry or default_registry()
    by_id = {wf.id: wf for wf in (_compiled(d, reg) for d in workflows)}
    bound: dict[str, list[ChannelWorkflow]] = {}
    for raw in channels:
        ch = raw if isinstance(raw, ChannelDoc) else ChannelDoc.model_validate(raw)
        entries = bound.setdefault(ch.name, [])
        for wid in ch.bound_workflow_ids:
            if wid not in by_id:
                raise KeyError(f"channel '{ch.name}' binds unknown workflow '{wid}'")
            entries.append(ChannelWorkflow(by_id[wid]))
    return Engine(bound, rulesets=ruleset_catalog(rulesets))


def ruleset_catalog(docs: Iterable[Mapping[str, Any]]) -> RulesetCatalog:
    """A catalog of ruleset documents (each active at its `version`, default 1), for offline runs."""
    compiled = []
    for doc in docs:
        rid = doc.get("ruleset_id") or doc.get("id")
        version = doc.get("version", 1)
        compiled.append(compile_ruleset(doc, str(rid), version if type(version) is int else 1))
    return RulesetCatalog.of(compiled)


def send(
    engine: Engine,
    channel: str,
    data: Any,
    metadata: dict[str, Any] | None = None,
    *,
    rollout_bucket: int | None = None,
    services: Any = None,
) -> dict[str, Any]:
    """Process one request on `channel`; returns the response body (raises on engine failure)."""
    message = Message.from_request(data, metadata)
    opts = RunOptions(rollout_bucket=rollout_bucket, services=services)
    if engine.is_sync(channel):
        engine.process_sync(channel, message, opts)
    else:
        asyncio.run(engine.process(channel, message, opts))
    return message.to_response()


def run_workflow(
    doc: CompiledWorkflow | WorkflowDoc | Mapping[str, Any],
    data: Any,
    metadata: dict[str, Any] | None = None,
    *,
    registry: FunctionRegistry | None = None,
    services: Any = None,
) -> dict[str, Any]:
    """Run one workflow alone on `{data, metadata}` and return `{id, status, data, errors}`."""
    wf = _compiled(doc, registry or default_registry())
    engine = Engine({"test": [ChannelWorkflow(wf)]})
    return send(engine, "test", data, metadata, services=services)


def load_bundle(path: str | Path, *, registry: FunctionRegistry | None = None) -> Engine:
    """Build an engine from a `{"workflows": [...], "channels": [...]}` JSON file."""
    doc = json.loads(Path(path).read_text())
    return build_engine(
        doc.get("workflows", []), doc.get("channels", []), registry=registry, rulesets=doc.get("rulesets", [])
    )


def _subset(actual: Any, expected: Any, where: str) -> None:
    if isinstance(expected, dict) and isinstance(actual, dict):
        for key, value in expected.items():
            if key not in actual:
                raise AssertionError(f"{where}.{key} is missing; got keys {sorted(actual)}")
            _subset(actual[key], value, f"{where}.{key}")
    elif actual != expected:
        raise AssertionError(f"{where}: expected {expected!r}, got {actual!r}")


def assert_response(
    response: Mapping[str, Any], *, data: Any = None, errors: list[str] | None = None, partial: bool = False
) -> None:
    """Check a response body. `partial=True` only checks the keys given in `data` (recursively).

    `errors` lists the expected error codes in order (e.g. `["VALIDATION_ERROR"]`).
    """
    if response.get("status") != "ok":
        raise AssertionError(f"status is {response.get('status')!r}, expected 'ok'")
    if data is not None:
        if partial:
            _subset(response.get("data"), data, "data")
        elif response.get("data") != data:
            raise AssertionError(f"data: expected {data!r}, got {response.get('data')!r}")
    if errors is not None:
        codes = [e.get("code") for e in response.get("errors", [])]
        if codes != errors:
            raise AssertionError(f"error codes: expected {errors!r}, got {codes!r}")


def assert_no_errors(response: Mapping[str, Any]) -> None:
    if response.get("errors"):
        raise AssertionError(f"expected no errors, got {response['errors']!r}")


def assert_steps(report: Mapping[str, Any], *, executed: Iterable[str] = (), skipped: Iterable[str] = ()) -> None:
    """Check a dry-run trace: the named tasks ran / were skipped."""
    results = {s["task_id"]: s["result"] for s in report["trace"]["steps"] if s.get("task_id") is not None}
    for task_id in executed:
        if results.get(task_id) != "executed":
            raise AssertionError(f"task {task_id!r}: expected executed, got {results.get(task_id)!r}")
    for task_id in skipped:
        if results.get(task_id) != "skipped":
            raise AssertionError(f"task {task_id!r}: expected skipped, got {results.get(task_id)!r}")
