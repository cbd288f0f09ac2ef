"""Impact analysis: run a candidate version and the live version on the same recorded messages, side effects
stubbed, and say which answers change. Pure: the messages come from the caller (the admin API reads them
from the channel's retained records); nothing here reads or writes Kafka.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from app.engine.diff import value_changes
from app.engine.dryrun import dry_run
from app.engine.rules.testsuite import stubbed_registry

__all__ = ["ImpactReport", "Sample", "compare_versions"]

MAX_EXAMPLES = 20


@dataclass(frozen=True, slots=True)
class Sample:
    """One recorded message: where it came from and what the workflow sees."""

    where: str  # topic[partition]@offset
    key: str | None
    data: Any
    metadata: Mapping[str, Any]


@dataclass(slots=True)
class ImpactReport:
    total: int = 0
    consistent: int = 0
    changed: int = 0
    errored: int = 0  # the candidate fails where the live version did not (or the reverse)
    examples: list[dict[str, Any]] = field(default_factory=list)
    changed_samples: list[tuple[Sample, Any]] = field(default_factory=list)  # (sample, candidate output)

    def to_json(self) -> dict[str, Any]:
        return {
            "total": self.total,
            "consistent": self.consistent,
            "changed": self.changed,
            "errored": self.errored,
            "examples": self.examples,
        }

    def as_tests(self) -> list[dict[str, Any]]:
        """Changed cases as test-suite cases expecting the candidate's answer (docs/rules.md format)."""
        return [
            {
                "name": f"replay {s.where}",
                "input": s.data,
                **({"metadata": dict(s.metadata)} if s.metadata else {}),
                "expect": {"data": out},
            }
            for s, out in self.changed_samples
        ]


def _outcome(report: Mapping[str, Any]) -> tuple[Any, Any]:
    error = report.get("error")
    code = error.get("code") if isinstance(error, Mapping) else error
    return report.get("output"), code


def compare_versions(
    live: Mapping[str, Any],
    candidate: Mapping[str, Any],
    samples: Iterable[Sample],
    *,
    registry: Any = None,
    rulesets: Any = None,
    progress: Callable[[int], None] | None = None,
) -> ImpactReport:
    """Run both workflow documents on every sample with stubbed side effects; count what changes."""
    reg = stubbed_registry(registry)
    out = ImpactReport()
    for sample in samples:
        out.total += 1
        before = dry_run(live, sample.data, dict(sample.metadata), registry=reg, rulesets=rulesets)
        after = dry_run(candidate, sample.data, dict(sample.metadata), registry=reg, rulesets=rulesets)
        (old_out, old_err), (new_out, new_err) = _outcome(before), _outcome(after)
        if old_err != new_err:
            out.errored += 1
            kind = "errored"
        elif old_out != new_out:
            out.changed += 1
            kind = "changed"
        else:
            out.consistent += 1
            kind = ""
        if kind:
            out.changed_samples.append((sample, new_out))
            if len(out.examples) < MAX_EXAMPLES:
                out.examples.append(
                    {
                        "where": sample.where,
                        "key": sample.key,
                        "kind": kind,
                        "error": {"live": old_err, "candidate": new_err} if kind == "errored" else None,
                        "changes": [c.to_json() for c in value_changes(old_out, new_out)][:20],
                    }
                )
        if progress is not None:
            progress(out.total)
    return out
