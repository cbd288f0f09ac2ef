"""Rule counters kept in the pure engine; the observability layer exports them at scrape time.

Plain dict increments (tens of nanoseconds) so rules stay cheap; labels are bounded: table and
ruleset names come from the config, result codes from the ruleset documents, and row numbers above
`MAX_ROW_LABEL` share the label `other`.
"""

from __future__ import annotations

__all__ = ["MAX_ROW_LABEL", "RuleStats", "rule_stats"]

MAX_ROW_LABEL = 100


class RuleStats:
    """`table_hits[(table, row)]`, `results[(ruleset, code)]`, `metrics[(ruleset, name)]`; only increase."""

    __slots__ = ("metrics", "results", "table_hits")

    def __init__(self) -> None:
        self.table_hits: dict[tuple[str, str], int] = {}
        self.results: dict[tuple[str, str], int] = {}
        self.metrics: dict[tuple[str, str], int] = {}

    def hit(self, table: str, row: int) -> None:
        """Count a selected row (0-based index; labelled 1-based as users number rows)."""
        key = (table, str(row + 1) if row < MAX_ROW_LABEL else "other")
        hits = self.table_hits
        hits[key] = hits.get(key, 0) + 1

    def result(self, ruleset: str, code: str) -> None:
        key = (ruleset, code)
        results = self.results
        results[key] = results.get(key, 0) + 1

    def metric(self, ruleset: str, name: str) -> None:
        """An action step's `metric` (rule_metric_total)."""
        key = (ruleset, name)
        metrics = self.metrics
        metrics[key] = metrics.get(key, 0) + 1


_STATS = RuleStats()


def rule_stats() -> RuleStats:
    """The process-wide counters (what `/metrics` exports)."""
    return _STATS
