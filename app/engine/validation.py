"""`validate_workflow`: what `POST /workflows/validate` answers. Never raises for bad input."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.engine.compiler import analyse
from app.engine.functions import shared_default_registry
from app.engine.models import WorkflowDoc
from app.engine.registry import FunctionRegistry

__all__ = ["validate_workflow"]


def validate_workflow(
    doc: Mapping[str, Any] | WorkflowDoc | Any, registry: FunctionRegistry | None = None
) -> dict[str, Any]:
    """`{"valid", "errors": [{"field", "message"}], "warnings": [str]}`.

    Checks structure, duplicate task ids, JSONLogic compile errors, unknown functions, each
    function's input shape (including a validation rule without `message`, Orion quirk 8).
    """
    try:
        _, errors, warnings = analyse(doc, registry or shared_default_registry())
    except Exception as exc:  # the validator must answer, whatever the document holds
        errors, warnings = [{"field": "(document)", "message": f"cannot validate: {exc}"}], []
    return {"valid": not errors, "errors": errors, "warnings": warnings}
