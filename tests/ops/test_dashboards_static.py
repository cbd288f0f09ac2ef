"""Static checks of ops/: dashboards and alert rules only use metrics the code exports, the dashboard
JSON matches its generator, Prometheus accepts the rules and the provisioning points at the files."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

import app.connectors.breaker
import app.gateway.app
import app.governance.metrics
import app.worker.runner  # noqa: F401  (import every module that once defined metrics)
from app.observability.metrics import metric_names
from tests.ops._promql import ALERTS, DASHBOARDS, ROOT, alert_rules, dashboard_exprs, metric_names_in

# Prometheus' own series (not exported by Quasar's code but always present on a target).
_PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def _exported() -> set[str]:
    return metric_names() | _PROMETHEUS_SERIES


def test_every_dashboard_expression_uses_only_exported_metrics() -> None:
    exported = _exported()
    exprs = dashboard_exprs()
    assert len(exprs) >= 30, "the three dashboards should hold at least 30 queries"
    unknown = {e.where: sorted(metric_names_in(e.expr) - exported) for e in exprs}
    assert {k: v for k, v in unknown.items() if v} == {}
    assert all(metric_names_in(e.expr) for e in exprs), "an expression without any metric"


def test_every_alert_rule_uses_only_exported_metrics() -> None:
    exported = _exported()
    rules = alert_rules()
    assert {r["alert"] for r in rules} >= {
        "QuasarConsumerLagGrowing",
        "QuasarDeadLettersHigh",
        "QuasarErrorRatioHigh",
        "QuasarReplyTimeouts",
        "QuasarCircuitBreakerOpen",
    }
    unknown = {r["alert"]: sorted(metric_names_in(r["expr"]) - exported) for r in rules}
    assert {k: v for k, v in unknown.items() if v} == {}


def test_metric_name_extraction_sees_through_promql_syntax() -> None:
    # The checker itself must not pass vacuously.
    expr = (
        'sum by (channel) (rate(messages_total{status!="ok"}[5m])) / clamp_min(sum(rate(x_total[1m])), 1e-9)'
        " * on (workflow) group_left() max by (workflow) (y_total * 0 + 1) or vector(0)"
    )
    assert metric_names_in(expr) == {"messages_total", "x_total", "y_total"}
    assert metric_names_in("label_values(messages_total, channel)") == {"messages_total"}
    assert "not_a_metric_total" not in _exported()


def test_every_rule_links_a_runbook_section_that_exists() -> None:
    runbooks = (ROOT / "ops" / "runbooks.md").read_text().lower()
    for rule in alert_rules():
        url = rule["annotations"]["runbook_url"]
        anchor = url.split("#", 1)[1]
        assert f"## {rule['alert'].lower()}" in runbooks, f"{rule['alert']}: no section for #{anchor}"
        assert anchor == rule["alert"].lower()


def test_dashboard_json_is_what_the_generator_writes() -> None:
    path = ROOT / "ops/grafana/build_dashboards.py"
    spec = importlib.util.spec_from_file_location("build_dashboards", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = module.build()
    on_disk = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert on_disk == built, "run `python ops/grafana/build_dashboards.py`"


def test_dashboards_are_valid_grafana_documents() -> None:
    datasource = yaml.safe_load((ROOT / "ops/grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = datasource["datasources"][0]["uid"]
    uids = set()
    for path in DASHBOARDS.glob("*.json"):
        board = json.loads(path.read_text())
        uids.add(board["uid"])
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids"
        for panel in board["panels"]:
            if panel["type"] == "row":
                continue
            assert panel["datasource"]["uid"] == uid, f"{path.name}: {panel['title']}"
            pos = panel["gridPos"]
            assert pos["x"] + pos["w"] <= 24
            assert panel["targets"], f"{path.name}: {panel['title']} has no query"
    assert len(uids) == 4
    channel = json.loads((DASHBOARDS / "quasar-channel.json").read_text())
    assert [v["name"] for v in channel["templating"]["list"]] == ["channel"]
    assert all(
        "$channel" in t["expr"]
        for p in channel["panels"]
        if p["type"] != "row"
        for t in p["targets"]
        if "quasar_task" not in t["expr"] or "channel" in t["expr"]
    )


def _promtool() -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool missing: .ci/run installs the Debian package `prometheus`"
    return tool


def test_promtool_accepts_the_alert_rules() -> None:
    out = subprocess.run([_promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_promtool_rejects_a_broken_rule(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yml"
    bad.write_text("groups:\n  - name: x\n    rules:\n      - alert: X\n        expr: sum(rate(foo[5m]) >\n")
    out = subprocess.run([_promtool(), "check", "rules", str(bad)], capture_output=True, text=True)
    assert out.returncode != 0


def test_shipped_prometheus_config_is_valid_with_its_rules(tmp_path: Path) -> None:
    # The shipped config names /etc/prometheus/alerts.yml (its path in the container): check a copy
    # that points at the repository's file instead.
    config = yaml.safe_load((ROOT / "ops/prometheus/prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/alerts.yml"]
    config["rule_files"] = [str(ALERTS)]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    out = subprocess.run([_promtool(), "check", "config", str(copy)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    assert jobs == {"quasar-gateway", "quasar-worker"}


@pytest.mark.parametrize(
    "path", ["quasar-overview.json", "quasar-channel.json", "quasar-worker.json", "quasar-flows.json"]
)
def test_dashboard_files_exist(path: str) -> None:
    assert (DASHBOARDS / path).is_file()
