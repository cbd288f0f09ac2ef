"""THE PROOF: a real Prometheus scrapes a real `quasar worker` and `quasar gateway` under traffic, and
every dashboard panel expression and every alert rule is evaluated through its HTTP API.

Each panel query must parse and return data; each rule must load, evaluate without error (rule health
`ok`) and parse as an instant query; every metric they name must be exported by the code (static test)
and, except the event counters listed in `_EVENT_ONLY`, be present in Prometheus after the traffic.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from app.kafka import headers as H
from app.kafka.names import TopicNames
from app.kafka.producer import produce_sync
from tests.ops._promql import alert_rules, dashboard_exprs, metric_names_in, substitute
from tests.ops.conftest import OpsStack, poll

# Counters that only exist after an event this test cannot cause without a failing external system
# (breaker) or that the governance layer may not count (rate limit, retries); their panels end in
# `or vector(0)`. Everything else must be present in Prometheus after the traffic below.
_EVENT_ONLY = {
    "circuit_breaker_trips_total",
    "circuit_breaker_rejections_total",
    "rate_limit_rejections_total",
    "quasar_retries_total",
    # Flow metrics with labels exist once a flow runner has seen an instance, a signal or a task; the
    # ops stack runs no flow runner (tests/flows cover the runner). Their panels end in `or vector(0)`.
    "quasar_flow_instances",
    "quasar_flow_signals_total",
    "quasar_flow_external_tasks_total",
}

SYNC_CALLS = 30
ASYNC_CALLS = 10
SLOW_CALLS = 4


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def _value(samples: dict[Any, float], name: str, **labels: str) -> float:
    """Sum of the samples of `name` whose labels include `labels`."""
    return sum(v for (n, ls), v in samples.items() if n == name and labels.items() <= dict(ls).items())


def _workflow(wid: str) -> dict[str, Any]:
    return {
        "workflow_id": wid,
        "name": wid,
        "tasks": [
            {
                "id": "parse",
                "name": "parse",
                "function": {"name": "parse_json", "input": {"source": "payload", "target": "order"}},
            },
            {
                "id": "flag",
                "name": "flag",
                "function": {"name": "map", "input": {"mappings": [{"path": "data.order.flagged", "logic": True}]}},
            },
        ],
    }


RULE_CALLS = 6
_RULESET = {
    "ruleset_id": "ops-rules",
    "name": "ops rules",
    "entry": "size",
    "steps": {
        "size": {
            "kind": "decision",
            "branches": [{"when": {">": [{"var": "data.total"}, 100]}, "next": "big"}],
            "default": "small",
        },
        "big": {"kind": "terminal", "code": "BIG"},
        "small": {"kind": "terminal", "code": "SMALL"},
    },
}
_RULE_WORKFLOW = {
    "workflow_id": "ops-rule-wf",
    "name": "ops rule wf",
    "tasks": [
        {
            "id": "parse",
            "name": "parse",
            "function": {"name": "parse_json", "input": {"source": "payload", "target": "order"}},
        },
        {
            "id": "band",
            "name": "band",
            "function": {
                "name": "decision_table",
                "input": {
                    "name": "ops_band",
                    "hit_policy": "first",
                    "inputs": [{"name": "total", "expression": "data.order.total", "type": "number"}],
                    "outputs": [{"name": "band", "path": "data.band"}],
                    "rules": [{"when": ["< 100"], "then": ["low"]}, {"when": ["-"], "then": ["high"]}],
                },
            },
        },
        {
            "id": "decide",
            "name": "decide",
            "function": {
                "name": "rule",
                "input": {"ruleset": "ops-rules", "input": {"total": {"var": "data.order.total"}}},
            },
        },
    ],
}


def _channel(name: str, kind: str = "sync", **config: Any) -> dict[str, Any]:
    return {
        "channel_id": name,
        "name": name,
        "channel_type": kind,
        "protocol": "http",
        "methods": ["POST"],
        "workflow_id": "ops-wf",
        "config": config,
    }


@pytest.fixture(scope="module")
def traffic(ops_stack: OpsStack) -> Iterator[dict[str, Any]]:
    """Config changes, sync/async calls, timeouts, a rate-limited channel and one dead letter."""
    stack = ops_stack
    before = {"worker": _samples(stack.worker_url), "gateway": _samples(stack.gateway_url)}
    request_id = f"ops-{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as http:

        def ok(r: httpx.Response) -> None:
            assert r.status_code < 300, r.text

        ok(http.post("/api/v1/admin/workflows", json=_workflow("ops-wf")))
        ok(http.patch("/api/v1/admin/workflows/ops-wf/status", json={"status": "active"}))
        ok(http.post("/api/v1/admin/rulesets", json=_RULESET))
        ok(http.patch("/api/v1/admin/rulesets/ops-rules/status", json={"status": "active"}))
        ok(http.post("/api/v1/admin/workflows", json=_RULE_WORKFLOW))
        ok(http.patch("/api/v1/admin/workflows/ops-rule-wf/status", json={"status": "active"}))
        decisions = {**_channel("decisions"), "workflow_id": "ops-rule-wf"}
        ok(http.post("/api/v1/admin/channels", json=decisions))
        ok(http.patch("/api/v1/admin/channels/decisions/status", json={"status": "active"}))
        for doc in (
            _channel("orders"),
            _channel("events", "async"),
            _channel("slow", timeout_ms=1),
            _channel("limited", rate_limit={"requests_per_second": 1, "burst": 1}),
        ):
            ok(http.post("/api/v1/admin/channels", json=doc))
            ok(http.patch(f"/api/v1/admin/channels/{doc['channel_id']}/status", json={"status": "active"}))
        statuses: dict[str, list[int]] = {"orders": [], "events": [], "slow": [], "limited": []}
        for i in range(SYNC_CALLS):
            r = http.post("/api/v1/data/orders", json={"data": {"id": i, "total": 10 * i}})
            statuses["orders"].append(r.status_code)
        for i in range(ASYNC_CALLS):
            r = http.post("/api/v1/data/events/async", json={"data": {"i": i}})
            statuses["events"].append(r.status_code)
        for i in range(SLOW_CALLS):
            statuses["slow"].append(http.post("/api/v1/data/slow", json={"data": {"i": i}}).status_code)
        for i in range(5):
            statuses["limited"].append(http.post("/api/v1/data/limited", json={"data": {"i": i}}).status_code)
        statuses["missing"] = [http.get("/api/v1/data/nope").status_code]
        statuses["decisions"] = [
            http.post("/api/v1/data/decisions", json={"data": {"total": 50 * i}}).status_code for i in range(RULE_CALLS)
        ]
    # One undecodable record straight onto the channel topic: the worker dead-letters it.
    producer = Producer({"bootstrap.servers": str(stack.settings.kafka_bootstrap)})
    produce_sync(
        producer,
        TopicNames(stack.settings.topic_prefix).channel("orders"),
        b"\xff not json",
        b"bad",
        headers=[(H.REQUEST_ID, request_id.encode()), (H.CHANNEL, b"orders")],
    )
    poll(
        lambda: _value(_samples(stack.worker_url), "quasar_dlq_records_total", channel="orders") >= 1,
        within=30,
        what="the bad record dead-lettered",
    )
    yield {"before": before, "statuses": statuses, "request_id": request_id}


def test_sync_async_and_timeout_traffic_got_the_expected_answers(traffic: dict[str, Any]) -> None:
    statuses = traffic["statuses"]
    assert statuses["orders"] == [200] * SYNC_CALLS
    assert statuses["events"] == [202] * ASYNC_CALLS
    assert statuses["slow"] == [504] * SLOW_CALLS
    assert set(statuses["limited"]) <= {200, 429}
    assert statuses["decisions"] == [200] * RULE_CALLS


def test_worker_metrics_move_with_traffic(ops_stack: OpsStack, traffic: dict[str, Any]) -> None:
    before = traffic["before"]["worker"]
    after = poll(
        lambda: (
            (s := _samples(ops_stack.worker_url))
            and _value(s, "messages_total", channel="events", status="ok") >= ASYNC_CALLS
            and s
        ),
        within=30,
        what="async records processed",
    )

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    assert moved("messages_total", channel="orders", status="ok") == SYNC_CALLS
    assert moved("messages_total", channel="orders", status="dlq") == 1
    assert moved("message_duration_seconds_count", channel="orders") == SYNC_CALLS
    assert moved("quasar_dlq_records_total", channel="orders", code="DECODE_ERROR") == 1
    assert moved("errors_total", type="DECODE_ERROR") == 1
    assert moved("quasar_workflow_runs_total", channel="orders", workflow="ops-wf") == SYNC_CALLS
    assert moved("quasar_task_runs_total", workflow="ops-wf", task="flag", status="200") >= SYNC_CALLS
    assert moved("quasar_task_duration_seconds_count", workflow="ops-wf", task="parse") >= SYNC_CALLS
    assert moved("quasar_expired_total", channel="slow") + moved("messages_total", channel="slow") >= 1
    assert moved("quasar_config_changes_applied_total", kind="channel", outcome="applied") >= 8
    assert moved("quasar_config_propagation_delay_seconds_count") >= 10
    assert moved("engine_reloads_total", status="ok") >= 1
    assert moved("rule_results_total", ruleset="ops-rules", code="SMALL") == 3  # totals 0, 50, 100
    assert moved("rule_results_total", ruleset="ops-rules", code="BIG") == 3
    assert moved("decision_table_hits_total", table="ops_band", row="1") == 2
    assert moved("decision_table_hits_total", table="ops_band", row="2") == 4
    assert _value(after, "active_workflows") >= 1
    assert _value(after, "quasar_build_info", component="worker") == 1
    lag = {dict(ls)["topic"] for (n, ls) in after if n == "quasar_consumer_lag_records"}
    assert TopicNames(ops_stack.settings.topic_prefix).channel("orders") in lag


def test_gateway_metrics_move_with_traffic(ops_stack: OpsStack, traffic: dict[str, Any]) -> None:
    before, after = traffic["before"]["gateway"], _samples(ops_stack.gateway_url)

    def moved(name: str, **labels: str) -> float:
        return _value(after, name, **labels) - _value(before, name, **labels)

    route = "/api/v1/data/{channel}"
    assert moved("http_requests_total", method="POST", path=route, status="200") == SYNC_CALLS + _ok(traffic)
    assert moved("http_requests_total", method="POST", path="/api/v1/data/{channel}/async", status="202") == (
        ASYNC_CALLS
    )
    assert moved("http_requests_total", method="POST", path=route, status="504") == SLOW_CALLS
    assert moved("http_request_duration_seconds_count", method="POST", path=route, status="200") >= SYNC_CALLS
    assert moved("quasar_reply_timeouts_total", channel="slow") == SLOW_CALLS
    assert moved("errors_total", type="TIMEOUT_ERROR") + moved("errors_total", type="TIMEOUT") >= SLOW_CALLS
    assert "/api/v1/data/nope" not in {dict(ls).get("path") for (_n, ls) in after}, "raw URLs as labels"
    assert _value(after, "quasar_sync_requests_in_flight") == 0
    assert _value(after, "quasar_build_info", component="gateway") == 1
    assert moved("quasar_config_changes_applied_total", kind="workflow", outcome="applied") >= 2


def _ok(traffic: dict[str, Any]) -> int:
    return traffic["statuses"]["limited"].count(200) + traffic["statuses"]["decisions"].count(200)


def _query(prom: str, expr: str) -> dict[str, Any]:
    r = httpx.get(f"{prom}/api/v1/query", params={"query": expr}, timeout=10)
    body: dict[str, Any] = r.json()
    return body


def test_every_dashboard_panel_returns_data_from_prometheus(ops_stack: OpsStack, traffic: dict[str, Any]) -> None:
    exprs = dashboard_exprs()
    prom = ops_stack.prometheus_url
    variables = [e for e in exprs if "variable" in e.where]
    panels = [e for e in exprs if "variable" not in e.where]
    missing: dict[str, str] = {}
    pending = list(panels)

    def all_have_data() -> bool:
        # A panel that returned data has proved it; ask again only for the others. On a loaded box a
        # query takes seconds and one slow worker scrape (over scrape_timeout) marks its gauges stale
        # for an instant query, so re-asking all ~40 panels left room for one pass only.
        missing.clear()
        for e in list(pending):
            body = _query(prom, substitute(e.expr))
            if body.get("status") != "success":
                missing[e.where] = f"error: {body.get('error')}"
            elif not body["data"]["result"]:
                missing[e.where] = "no data"
            else:
                pending.remove(e)
        return not missing

    # Rates need two scrapes after the traffic: poll Prometheus until every panel has data (bounded).
    try:
        poll(all_have_data, within=90, what="every panel has data", every=1.0)
    except AssertionError:
        raise AssertionError(json.dumps(missing, indent=1)) from None
    # Parse errors are reported even when data is missing; be explicit that every query parsed.
    assert all(_query(prom, substitute(e.expr))["status"] == "success" for e in panels)
    for var in variables:  # label_values(metric, label) -> the series API Grafana uses
        (metric,) = metric_names_in(var.expr)
        r = httpx.get(f"{prom}/api/v1/label/channel/values", params={"match[]": metric}, timeout=10).json()
        assert {"orders", "events"} <= set(r["data"]), var.where


def test_every_alert_rule_loads_evaluates_and_parses(ops_stack: OpsStack, traffic: dict[str, Any]) -> None:
    prom = ops_stack.prometheus_url
    rules = alert_rules()

    def evaluated() -> list[dict[str, Any]] | None:
        groups = httpx.get(f"{prom}/api/v1/rules", timeout=10).json()["data"]["groups"]
        loaded = [r for g in groups for r in g["rules"]]
        if len(loaded) == len(rules) and all(not r["lastEvaluation"].startswith("0001") for r in loaded):
            return loaded
        return None

    loaded = poll(evaluated, within=30, what="every rule evaluated once", every=0.5)
    assert {r["name"] for r in loaded} == {r["alert"] for r in rules}
    unhealthy = {r["name"]: r.get("lastError") for r in loaded if r["health"] != "ok"}
    assert unhealthy == {}
    for rule in rules:
        body = _query(prom, rule["expr"])
        assert body["status"] == "success", (rule["alert"], body.get("error"))


def test_metrics_named_by_panels_and_rules_exist_in_prometheus(ops_stack: OpsStack, traffic: dict[str, Any]) -> None:
    prom = ops_stack.prometheus_url
    used = {n for e in dashboard_exprs() for n in metric_names_in(e.expr)}
    used |= {n for r in alert_rules() for n in metric_names_in(r["expr"])}
    known = set(httpx.get(f"{prom}/api/v1/label/__name__/values", timeout=10).json()["data"])
    assert used - known - _EVENT_ONLY == set()


def test_worker_health_endpoints(ops_stack: OpsStack, traffic: dict[str, Any]) -> None:
    health = httpx.get(f"{ops_stack.worker_url}/health", timeout=5)
    assert health.status_code == 200, health.text
    body = health.json()
    assert body["status"] == "ok"
    assert body["components"] == {
        "broker": "ok",
        "config": "ok",
        "engine": "ok",
        "redis": "not_configured",
        "flows": "not_configured",
    }
    assert body["config_offset"] >= 0
    assert httpx.get(f"{ops_stack.worker_url}/healthz", timeout=5).json() == {"status": "ok"}
    assert httpx.get(f"{ops_stack.worker_url}/nope", timeout=5).status_code == 404


def test_gateway_health_lists_components(ops_stack: OpsStack, traffic: dict[str, Any]) -> None:
    body = httpx.get(f"{ops_stack.gateway_url}/health", timeout=5).json()
    assert body["status"] == "ok"
    assert {"broker", "config", "engine", "redis"} <= set(body["components"])


def test_worker_logs_are_json_lines_carrying_the_request_id(ops_stack: OpsStack, traffic: dict[str, Any]) -> None:
    lines = [json.loads(line) for line in ops_stack.log("worker").splitlines() if line.startswith("{")]
    assert lines, ops_stack.log("worker")[-2000:]
    dead = [entry for entry in lines if "dead-lettered" in entry.get("event", "")]
    assert dead and dead[0]["request_id"] == traffic["request_id"]
    assert dead[0]["channel"] == "orders" and dead[0]["level"] == "warning"
    assert all({"event", "level", "timestamp", "logger"} <= set(entry) for entry in lines)
