"""Engine-specific errors, all inside the one hierarchy of `app.errors`."""

from __future__ import annotations

from typing import Any

from app.errors import ValidationFailed

__all__ = ["WorkflowInvalid"]


class WorkflowInvalid(ValidationFailed):
    """A workflow document cannot be compiled. `errors` = `[{"field", "message"}]` (400)."""

    def __init__(self, errors: list[dict[str, str]], message: str | None = None) -> None:
        first = f"{errors[0]['field']}: {errors[0]['message']}" if errors else "invalid workflow"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(message or f"Invalid workflow: {first}{more}", details={"errors": errors})
        self.errors = errors

    @property
    def report(self) -> dict[str, Any]:
        return {"valid": False, "errors": self.errors, "warnings": []}
