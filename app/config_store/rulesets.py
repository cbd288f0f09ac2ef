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

__all__ = ["call_problems", "check_activation", "ruleset_catalog"]


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
