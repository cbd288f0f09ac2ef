"""Rulesets in the folded config: the runtime catalog and the activation checks on `call` steps.

Calls are pinned to exact versions; a version number's definition never changes once it left draft,
so a caller keeps calling exactly what it was activated against, even after the callee moves on
(archived versions stay in the catalog for their callers). Activation refuses calls to versions that
are unknown, drafts, archived or invalid, cycles through calls and nesting deeper than the limit.
"""

from __future__ import annotations

from typing import Any

from app.config_store.state import ConfigState
from app.errors import ValidationFailed

__all__ = ["call_problems", "check_activation", "check_workflow_rules", "rule_task_problems", "ruleset_catalog"]


def ruleset_catalog(state: ConfigState) -> Any:
    """`RulesetCatalog` of every active or archived valid ruleset version, and the active one per id."""
    from app.engine.rules import RulesetCatalog

    versions: dict[tuple[str, int], Any] = {}
    active: dict[str, int] = {}
    for obj in state.objects("ruleset"):
        for n, doc in obj.versions.items():
            result = obj.compiled.get(n)
            if doc.get("status") == "draft" or result is None or not result.valid:
                continue
            versions[(obj.id, n)] = result.compiled.at_version(n)
        live = [n for n in obj.active if (obj.id, n) in versions]
        if live:
            active[obj.id] = live[0]
    return RulesetCatalog(versions, active)


def call_problems(state: ConfigState, compiled: Any) -> list[dict[str, str]]:
    """Field errors for a ruleset's `call` steps against the current config (empty: it may be activated)."""
    from app.engine.rules import check_calls

    def resolve(ruleset_id: str, version: int) -> tuple[str, Any] | None:
        obj = state.get("ruleset", ruleset_id)
        if obj is None or version not in obj.versions:
            return None
        result = obj.compiled.get(version)
        status = str(obj.versions[version].get("status"))
        if result is None or not result.valid:
            return status, None
        return status, result.compiled.at_version(version)

    errors: list[dict[str, str]] = check_calls(compiled, resolve)
    return errors


def check_activation(state: ConfigState, object_id: str, version: int, compiled: Any) -> None:
    """Refuse (400) activating ruleset `object_id` v`version` when its pinned calls do not resolve."""
    problems = call_problems(state, compiled)
    if problems:
        raise ValidationFailed(
            f"ruleset '{object_id}' version {version} cannot be activated: "
            + "; ".join(str(p["message"]) for p in problems),
            details=problems,
        )


def rule_task_problems(state: ConfigState, workflow: Any) -> list[dict[str, str]]:
    """Field errors for a workflow's `rule` tasks that name a ruleset this config cannot run.

    A task without `version` runs the ruleset's active version, so one must exist; a pinned `version` must be
    a valid, non-draft version. Inline rulesets were checked when the workflow compiled.
    """
    problems: list[dict[str, str]] = []
    tasks = workflow.get("tasks") if isinstance(workflow, dict) else None
    for i, task in enumerate(tasks if isinstance(tasks, list) else []):
        function = task.get("function") if isinstance(task, dict) else None
        if not isinstance(function, dict) or function.get("name") != "rule":
            continue
        inp = function.get("input")
        if not isinstance(inp, dict):
            continue
        ref, version = inp.get("ruleset"), inp.get("version")
        if not isinstance(ref, str):
            continue
        field = f"tasks[{i}].function.input.ruleset"
        obj = state.get("ruleset", ref)
        if version is None:
            if obj is None or not any(_runnable(obj, n) for n in obj.active):
                problems.append({"field": field, "message": f"ruleset '{ref}' has no active version"})
        elif obj is None or not isinstance(version, int) or version not in obj.versions:
            problems.append({"field": field, "message": f"ruleset '{ref}' has no version {version}"})
        elif obj.versions[version].get("status") == "draft" or not _runnable(obj, version):
            problems.append({"field": field, "message": f"ruleset '{ref}' version {version} is a draft or invalid"})
    return problems


def _runnable(obj: Any, version: int) -> bool:
    result = obj.compiled.get(version)
    return result is not None and bool(result.valid)


def check_workflow_rules(state: ConfigState, object_id: str, version: int, workflow: Any) -> None:
    """Refuse (400) activating workflow `object_id` v`version` when a `rule` task names a ruleset it cannot run."""
    problems = rule_task_problems(state, workflow)
    if problems:
        raise ValidationFailed(
            f"workflow '{object_id}' version {version} cannot be activated: "
            + "; ".join(f"{p['field']}: {p['message']}" for p in problems),
            details=problems,
        )
