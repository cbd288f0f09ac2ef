"""Run-time rule errors, inside the one error hierarchy (`app.errors`): each has a stable code.

They are raised by the `decision_table` and `rule` functions; the executor records a TASK_ERROR and,
without `continue_on_error`, fails the run with this error's code and status (422: the input met a
rule that cannot decide it, which is neither a bad request shape nor an engine fault).
"""

from __future__ import annotations

from app.errors import QuasarError

__all__ = ["DecisionConflict", "DecisionNotUnique", "FieldErrors", "RuleError", "RulesetUnavailable"]


class FieldErrors(ValueError):
    """A rule document with field errors (`errors` = [{"field", "message"}]); raised at compile time."""

    what = "document"

    def __init__(self, errors: list[dict[str, str]]) -> None:
        first = f"{errors[0]['field']}: {errors[0]['message']}" if errors else f"invalid {self.what}"
        more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)
        self.errors = errors


class RuleError(QuasarError):
    """Base of the rule errors."""

    code, status = "RULE_ERROR", 422


class DecisionNotUnique(RuleError):
    """A `unique` table matched more than one row."""

    code = "DECISION_NOT_UNIQUE"


class DecisionConflict(RuleError):
    """An `any` table matched rows whose outputs differ."""

    code = "DECISION_CONFLICT"


class RulesetUnavailable(RuleError):
    """A `rule` task or `call` step names a ruleset version this runtime does not hold."""

    code, status = "RULESET_UNAVAILABLE", 500
