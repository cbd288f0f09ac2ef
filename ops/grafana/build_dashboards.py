# ruff: noqa: E501  (PromQL expressions read best on one line)
"""Generate Quasar's Grafana dashboards (ops/grafana/dashboards/*.json).

Run `python ops/grafana/build_dashboards.py` after editing; tests/ops/test_dashboards_static.py fails when
the JSON files and this generator disagree. Every expression uses only metrics defined in
`app/observability/metrics.py` (proved by tests/ops), `$__rate_interval` for rates and `$channel` on the
drill-down. Event counters that stay absent until the first event (breaker, rate limit, retries) end
in `or vector(0)` so their panels show 0 instead of "No data".
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["DASHBOARDS", "build", "main"]

OUT = Path(__file__).resolve().parent / "dashboards"
DS = {"type": "prometheus", "uid": "prometheus"}
R = "$__rate_interval"


class _Board:
    def __init__(self, uid: str, title: str, description: str) -> None:
        self.uid, self.title, self.description = uid, title, description
        self.panels: list[dict[str, Any]] = []
        self.templating: list[dict[str, Any]] = []
        self._x = 0
        self._y = 0

    def row(self, title: str) -> None:
        if self._x:
            self._x, self._y = 0, self._y + 8
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "collapsed": False,
                "id": len(self.panels) + 1,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
                "panels": [],
            }
        )
        self._y += 1

    def panel(
        self,
        title: str,
        targets: list[tuple[str, str]],
        *,
        unit: str = "short",
        kind: str = "timeseries",
        width: int = 8,
        description: str = "",
    ) -> None:
        if self._x + width > 24:
            self._x, self._y = 0, self._y + 8
        self.panels.append(
            {
                "type": kind,
                "title": title,
                "description": description,
                "id": len(self.panels) + 1,
                "datasource": DS,
                "gridPos": {"h": 8, "w": width, "x": self._x, "y": self._y},
                "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
                "targets": [
                    {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                    for i, (expr, legend) in enumerate(targets)
                ],
            }
        )
        self._x += width

    def channel_variable(self) -> None:
        self.templating.append(
            {
                "name": "channel",
                "label": "Channel",
                "type": "query",
                "datasource": DS,
                "query": {"query": "label_values(messages_total, channel)", "refId": "channel"},
                "definition": "label_values(messages_total, channel)",
                "refresh": 2,
                "includeAll": True,
                "multi": True,
                "allValue": ".+",
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "sort": 1,
            }
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "uid": self.uid,
            "title": self.title,
            "description": self.description,
            "tags": ["quasar"],
            "timezone": "browser",
            "schemaVersion": 39,
            "version": 1,
            "editable": True,
            "graphTooltip": 1,
            "refresh": "10s",
            "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": self.templating},
            "annotations": {"list": []},
            "panels": self.panels,
        }


def _overview() -> _Board:
    b = _Board("quasar-overview", "Quasar / Overview", "Throughput, errors, latency and Kafka health of all channels.")
    b.row("Traffic")
    b.panel(
        "Throughput by channel",
        [(f"sum by (channel) (rate(messages_total[{R}]))", "{{channel}}")],
        unit="reqps",
        description="Records processed by workers per second (all outcomes).",
    )
    b.panel("Outcomes", [(f"sum by (status) (rate(messages_total[{R}]))", "{{status}}")], unit="reqps")
    b.panel(
        "Error ratio",
        [
            (
                f'sum(rate(messages_total{{status!="ok"}}[{R}])) / clamp_min(sum(rate(messages_total[{R}])), 1e-9)',
                "not ok / all",
            )
        ],
        unit="percentunit",
        description="Share of records that did not finish ok (dead-lettered or expired).",
    )
    b.row("Latency")
    b.panel(
        "Processing p50 by channel",
        [
            (
                f"histogram_quantile(0.5, sum by (channel, le) (rate(message_duration_seconds_bucket[{R}])))",
                "{{channel}}",
            )
        ],
        unit="s",
    )
    b.panel(
        "Processing p99 by channel",
        [
            (
                f"histogram_quantile(0.99, sum by (channel, le) (rate(message_duration_seconds_bucket[{R}])))",
                "{{channel}}",
            )
        ],
        unit="s",
    )
    b.panel(
        "HTTP p50 / p99 (gateway)",
        [
            (f"histogram_quantile(0.5, sum by (le) (rate(http_request_duration_seconds_bucket[{R}])))", "p50"),
            (f"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket[{R}])))", "p99"),
        ],
        unit="s",
        description="End-to-end sync latency as callers see it (includes the Kafka round trip).",
    )
    b.row("Errors")
    b.panel(
        "HTTP requests by status", [(f"sum by (status) (rate(http_requests_total[{R}]))", "{{status}}")], unit="reqps"
    )
    b.panel("Errors by type", [(f"sum by (type) (rate(errors_total[{R}]))", "{{type}}")], unit="ops")
    b.panel(
        "DLQ rate by channel", [(f"sum by (channel) (rate(quasar_dlq_records_total[{R}]))", "{{channel}}")], unit="ops"
    )
    b.row("Kafka and capacity")
    b.panel(
        "Consumer lag by topic",
        [("sum by (group, topic) (quasar_consumer_lag_records)", "{{group}} {{topic}}")],
        unit="short",
        description="High watermark of the last fetch minus position, summed over partitions.",
    )
    b.panel("Sync requests in flight", [("sum(quasar_sync_requests_in_flight)", "in flight")])
    b.panel(
        "Reply timeouts (504)",
        [(f"sum by (channel) (rate(quasar_reply_timeouts_total[{R}]))", "{{channel}}")],
        unit="ops",
    )
    b.row("Governance and config")
    b.panel(
        "Rate-limit rejections",
        [(f"sum by (channel) (rate(rate_limit_rejections_total[{R}])) or vector(0)", "{{channel}}")],
        unit="ops",
    )
    b.panel(
        "Circuit breaker events",
        [
            (f"sum by (connector) (rate(circuit_breaker_trips_total[{R}])) or vector(0)", "trips {{connector}}"),
            (
                f"sum by (connector) (rate(circuit_breaker_rejections_total[{R}])) or vector(0)",
                "rejections {{connector}}",
            ),
        ],
        unit="ops",
    )
    b.panel(
        "Config changes",
        [(f"sum by (kind, outcome) (increase(quasar_config_changes_applied_total[{R}]))", "{{kind}} {{outcome}}")],
    )
    b.row("Rules")
    b.panel(
        "Decision results",
        [(f"sum by (ruleset, code) (rate(rule_results_total[{R}]))", "{{ruleset}} {{code}}")],
        unit="ops",
        description="Ruleset results of `rule` tasks per second, by result code.",
    )
    b.panel(
        "Result distribution and ruleset activations",
        [
            (
                f"sum by (ruleset, code) (rate(rule_results_total[{R}])) / ignoring (code) group_left sum by (ruleset) (rate(rule_results_total[{R}]))",
                "{{ruleset}} {{code}}",
            ),
            (
                f'sum(increase(quasar_config_changes_applied_total{{kind="ruleset", outcome="applied"}}[{R}])) or vector(0)',
                "ruleset changes",
            ),
        ],
        unit="percentunit",
        description="Share of each result code per ruleset; a ruleset change (activation) next to a shift in the shares explains it.",
    )
    b.panel(
        "Decision table rows hit",
        [(f"topk(10, sum by (table, row) (rate(decision_table_hits_total[{R}])))", "{{table}} row {{row}}")],
        unit="ops",
        description="The ten most selected decision table rows.",
    )
    return b


def _channel() -> _Board:
    c = '{channel=~"$channel"}'
    b = _Board("quasar-channel", "Quasar / Channel", "Drill-down into one or more channels.")
    b.channel_variable()
    b.row("Channel traffic")
    b.panel("Throughput by outcome", [(f"sum by (status) (rate(messages_total{c}[{R}]))", "{{status}}")], unit="reqps")
    b.panel(
        "Processing latency",
        [
            (f"histogram_quantile({q}, sum by (le) (rate(message_duration_seconds_bucket{c}[{R}])))", f"p{p}")
            for q, p in (("0.5", "50"), ("0.9", "90"), ("0.99", "99"))
        ],
        unit="s",
    )
    b.panel("DLQ by error code", [(f"sum by (code) (rate(quasar_dlq_records_total{c}[{R}]))", "{{code}}")], unit="ops")
    b.row("Workflows and tasks")
    b.panel(
        "Workflow runs", [(f"sum by (workflow) (rate(quasar_workflow_runs_total{c}[{R}]))", "{{workflow}}")], unit="ops"
    )
    b.panel(
        "Workflow p99",
        [
            (
                f"histogram_quantile(0.99, sum by (workflow, le) (rate(quasar_workflow_duration_seconds_bucket{c}[{R}])))",
                "{{workflow}}",
            )
        ],
        unit="s",
    )
    b.panel(
        "Task runs by status",
        [
            (
                f"sum by (workflow, task, status) (rate(quasar_task_runs_total[{R}])"
                f" * on (workflow) group_left() max by (workflow) (quasar_workflow_runs_total{c} * 0 + 1))",
                "{{workflow}}/{{task}} {{status}}",
            )
        ],
        unit="ops",
        description="Tasks of the workflows that run on the selected channels.",
    )
    b.panel(
        "Task p99",
        [
            (
                f"histogram_quantile(0.99, sum by (workflow, task, le) (rate(quasar_task_duration_seconds_bucket[{R}])"
                f" * on (workflow) group_left() max by (workflow) (quasar_workflow_runs_total{c} * 0 + 1)))",
                "{{workflow}}/{{task}}",
            )
        ],
        unit="s",
    )
    b.row("Caller experience")
    b.panel("Reply timeouts", [(f"sum(rate(quasar_reply_timeouts_total{c}[{R}])) or vector(0)", "504s")], unit="ops")
    b.panel(
        "Expired before processing", [(f"sum(rate(quasar_expired_total{c}[{R}])) or vector(0)", "expired")], unit="ops"
    )
    b.panel("Retries", [(f"sum(rate(quasar_retries_total{c}[{R}])) or vector(0)", "retries")], unit="ops")
    b.panel(
        "Rate-limit rejections", [(f"sum(rate(rate_limit_rejections_total{c}[{R}])) or vector(0)", "429s")], unit="ops"
    )
    b.panel(
        "Breaker by connector",
        [(f"sum by (connector) (rate(circuit_breaker_rejections_total{c}[{R}])) or vector(0)", "{{connector}}")],
        unit="ops",
    )
    return b


def _worker() -> _Board:
    b = _Board("quasar-worker", "Quasar / Worker internals", "Consumer lag, config propagation, engine reloads.")
    b.row("Consumers")
    b.panel(
        "Lag per partition",
        [("max by (topic, partition) (quasar_consumer_lag_records)", "{{topic}}[{{partition}}]")],
        width=12,
    )
    b.panel(
        "Records per second by instance",
        [(f"sum by (instance) (rate(messages_total[{R}]))", "{{instance}}")],
        unit="reqps",
        width=12,
    )
    b.row("Config")
    b.panel(
        "Config propagation delay",
        [
            (
                f"histogram_quantile({q}, sum by (le) (rate(quasar_config_propagation_delay_seconds_bucket[{R}])))",
                f"p{p}",
            )
            for q, p in (("0.5", "50"), ("0.99", "99"))
        ],
        unit="s",
        description="Config record timestamp to applied, per process, after catch-up.",
    )
    b.panel(
        "Applied config offset by instance",
        [("max by (job, instance) (quasar_config_applied_offset)", "{{job}} {{instance}}")],
    )
    b.panel(
        "Engine reloads",
        [
            (f"sum by (status) (increase(engine_reloads_total[{R}]))", "{{status}}"),
            ("max(active_workflows)", "active workflows"),
        ],
    )
    b.panel(
        "Engine reload p99",
        [(f"histogram_quantile(0.99, sum by (le) (rate(engine_reload_duration_seconds_bucket[{R}])))", "p99")],
        unit="s",
    )
    b.row("Process")
    b.panel(
        "CPU",
        [(f"sum by (job, instance) (rate(process_cpu_seconds_total[{R}]))", "{{job}} {{instance}}")],
        unit="percentunit",
    )
    b.panel(
        "Resident memory",
        [("sum by (job, instance) (process_resident_memory_bytes)", "{{job}} {{instance}}")],
        unit="bytes",
    )
    b.panel("Targets up", [('sum by (job) (up{job=~"quasar.*"})', "{{job}}")], description="Scraped instances.")
    return b


def _flows() -> _Board:
    b = _Board("quasar-flows", "Quasar / Flows", "Durable flows: instances, timers, signals, cron, external tasks.")
    b.row("Instances")
    b.panel(
        "Instances by status",
        [("sum by (state) (quasar_flow_instances) or vector(0)", "{{state}}")],
        description="Instances on the runners' partitions (docs/flows.md).",
    )
    b.panel("Events applied/s", [(f"sum(rate(quasar_flow_events_applied_total[{R}]))", "events/s")], unit="ops")
    b.panel(
        "Signals/s by type",
        [(f"sum by (type) (rate(quasar_flow_signals_total[{R}])) or vector(0)", "{{type}}")],
        unit="ops",
    )
    b.row("Timers")
    b.panel("Pending timers", [("sum(quasar_flow_timers_pending)", "timers")])
    b.panel(
        "Timer fire lateness",
        [
            (
                f"histogram_quantile(0.5, sum by (le) (rate(quasar_flow_timer_fire_lateness_seconds_bucket[{R}])))",
                "p50",
            ),
            (
                f"histogram_quantile(0.99, sum by (le) (rate(quasar_flow_timer_fire_lateness_seconds_bucket[{R}])))",
                "p99",
            ),
        ],
        unit="s",
        description="Due time to the timer's event applied; alert above 1 s (p99).",
    )
    b.panel(
        "Timers fired/s", [(f"sum(rate(quasar_flow_timer_fire_lateness_seconds_count[{R}]))", "fired/s")], unit="ops"
    )
    b.row("Cron and external workers")
    b.panel(
        "Cron fires",
        [
            (f"sum(increase(quasar_flow_cron_fires_total[{R}]))", "started"),
            (f"sum(increase(quasar_flow_cron_skipped_total[{R}]))", "skipped (overlap)"),
            (f"sum(increase(quasar_flow_cron_missed_total[{R}]))", "missed (beyond catch-up)"),
        ],
    )
    b.panel(
        "External tasks/s",
        [
            (
                f"sum by (handler, state) (rate(quasar_flow_external_tasks_total[{R}])) or vector(0)",
                "{{handler}} {{state}}",
            )
        ],
        unit="ops",
        width=16,
    )
    return b


DASHBOARDS = {
    "quasar-overview.json": _overview,
    "quasar-channel.json": _channel,
    "quasar-worker.json": _worker,
    "quasar-flows.json": _flows,
}


def build() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    return {name: json.dumps(make().to_json(), indent=2) + "\n" for name, make in DASHBOARDS.items()}


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in build().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")


if __name__ == "__main__":
    main()
