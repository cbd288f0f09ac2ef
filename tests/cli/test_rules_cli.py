"""`quasar test FILE|ID` exit codes, table and JUnit output; `quasar rulesets ...`; `quasar table to-csv|from-csv`."""

from __future__ import annotations

import copy
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from typer.testing import CliRunner

from app.cli import _register, cli
from app.settings import Settings
from tests.cli.admin_gateway import AdminGateway, admin_gateway

_register()
runner = CliRunner()
RULES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "rules"
ENV = {"COLUMNS": "200", "QUASAR_URL": ""}


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return runner.invoke(cli, list(args), env={**ENV, **(env or {})})


@pytest.mark.parametrize("name", ["loan-approval", "shipping-rates", "fraud-scoring"])
def test_offline_suites_of_the_examples_pass_with_exit_0(name: str, tmp_path: Path) -> None:
    junit = tmp_path / "junit.xml"
    result = invoke("test", str(RULES / f"{name}.json"), "--junit", str(junit))
    assert result.exit_code == 0, result.output
    assert "0 failed" in result.output
    root = ElementTree.fromstring(junit.read_text())
    assert all(s.get("failures") == "0" for s in root.iter("testsuite"))
    assert len(list(root.iter("testcase"))) >= 2


def test_a_failing_case_exits_1_and_names_the_difference(tmp_path: Path) -> None:
    bundle = json.loads((RULES / "loan-approval.json").read_text())
    bundle["rulesets"][0]["tests"][0]["expect"]["code"] = "REJECTED"
    path = tmp_path / "loan.json"
    path.write_text(json.dumps(bundle))
    junit = tmp_path / "junit.xml"
    result = invoke("test", str(path), "--junit", str(junit))
    assert result.exit_code == 1, result.output
    assert "FAIL" in result.output and 'expected "REJECTED", got "APPROVED"' in result.output
    failures = list(ElementTree.fromstring(junit.read_text()).iter("failure"))
    assert len(failures) == 1
    as_json = invoke("test", str(path), "--json")
    assert as_json.exit_code == 1
    reports = json.loads(as_json.output)
    assert [r["failed"] for r in reports] == [1, 0]


def test_a_testsuite_document_names_its_target_file(tmp_path: Path) -> None:
    suite = {
        "kind": "testsuite",
        "file": str(RULES / "fraud-scoring.json"),
        "tests": [{"name": "x", "input": {}, "expect": {"code": "ALLOW"}}],
    }
    # the file is a bundle, not one document: refused with exit 2
    path = tmp_path / "suite.json"
    path.write_text(json.dumps(suite))
    assert invoke("test", str(path)).exit_code == 2
    rs = json.loads((RULES / "fraud-scoring.json").read_text())["rulesets"][0]
    (tmp_path / "signals.json").write_text(json.dumps(rs))
    suite = {
        "kind": "testsuite",
        "file": "signals.json",
        "tests": [{"name": "empty scores 0", "input": {}, "expect": {"output": {"score": 0}}}],
    }
    path.write_text(json.dumps(suite))
    result = invoke("test", str(path))
    assert result.exit_code == 0, result.output


def test_rule_tasks_find_rulesets_from_other_files(tmp_path: Path) -> None:
    bundle = json.loads((RULES / "loan-approval.json").read_text())
    (tmp_path / "wf.json").write_text(json.dumps(bundle["workflows"][0]))
    (tmp_path / "rs.json").write_text(json.dumps({**bundle["rulesets"][0], "tests": None}))
    without = invoke("test", str(tmp_path / "wf.json"))
    assert without.exit_code == 1 and "RULESET_UNAVAILABLE" not in without.output  # failed: ENGINE_ERROR code
    with_rulesets = invoke("test", str(tmp_path / "wf.json"), "--rulesets", str(tmp_path / "rs.json"))
    assert with_rulesets.exit_code == 0, with_rulesets.output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"name": "no tests", "tasks": []}', "holds no workflow or ruleset with `tests`"),
        (
            '{"ruleset_id": "r", "entry": "x", "steps": {}, "tests": []}',
            "invalid ruleset: steps: needs at least one step",
        ),
    ],
)
def test_unreadable_or_invalid_files_exit_2(content: str, message: str, tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    result = runner.invoke(cli, ["test", str(path)], env=ENV)
    assert result.exit_code == 2
    assert message in result.output


def test_table_csv_export_and_import_round_trip(tmp_path: Path) -> None:
    wf = tmp_path / "wf.json"
    bundle = json.loads((RULES / "shipping-rates.json").read_text())
    wf.write_text(json.dumps(bundle["workflows"][0]))
    exported = invoke("table", "to-csv", str(wf))
    assert exported.exit_code == 0, exported.output
    assert exported.output == (RULES / "shipping-rates.csv").read_text()
    csv_path = tmp_path / "rates.csv"
    csv_path.write_text(exported.output)
    imported = invoke("table", "from-csv", str(csv_path), "--base", str(wf))
    assert imported.exit_code == 0, imported.output
    table = bundle["workflows"][0]["tasks"][1]["function"]["input"]
    again = json.loads(imported.output)
    assert again["hit_policy"] == "first" and again["target"] == "data.quote"
    assert [r["then"] for r in again["rules"]] == [r["then"] for r in table["rules"]]
    bad = tmp_path / "bad.csv"
    bad.write_text("input:data.x (number),output:data.y\nabc,1\n")
    refused = invoke("table", "from-csv", str(bad), "--hit-policy", "first")
    assert refused.exit_code == 2 and "number column" in refused.output


# -- against a server ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gateway(module_settings: Settings) -> Iterator[AdminGateway]:
    with admin_gateway(module_settings) as gw:
        yield gw


def test_test_by_id_runs_the_stored_suite_and_rulesets_commands(gateway: AdminGateway, tmp_path: Path) -> None:
    rid = f"signals-{uuid.uuid4().hex[:8]}"
    doc = copy.deepcopy(json.loads((RULES / "fraud-scoring.json").read_text())["rulesets"][0])
    doc["ruleset_id"] = rid
    path = tmp_path / "rs.json"
    path.write_text(json.dumps(doc))
    url = ["--url", gateway.url]
    assert invoke("rulesets", "validate", "-f", str(path), *url).exit_code == 0
    applied = invoke("rulesets", "apply", "-f", str(path), "--activate", *url)
    assert applied.exit_code == 0, applied.output
    junit = tmp_path / "junit.xml"
    passed = invoke("test", rid, "--kind", "ruleset", "--junit", str(junit), *url)
    assert passed.exit_code == 0, passed.output
    assert ElementTree.fromstring(junit.read_text()).find("testsuite").get("tests") == "2"  # type: ignore[union-attr]
    assert invoke("test", rid, *url).exit_code == 0  # kind found by trying rulesets, then workflows
    assert invoke("test", "no-such-thing", *url).exit_code == 3
    dry = invoke("rulesets", "test", rid, "-d", '{"amount": 2000}', *url)
    assert dry.exit_code == 0 and "score" in dry.output and "SCORED" in dry.output
    listed = invoke("rulesets", "list", *url)
    assert listed.exit_code == 0 and rid in listed.output


def test_make_dev_loads_and_activates_the_rule_examples(gateway: AdminGateway) -> None:
    from app.cli.dev import load_examples

    counts = load_examples(gateway.url, RULES)
    # callees before callers, every suite passing at activation
    assert counts == {"workflows": 3, "channels": 3, "connectors": 0, "rulesets": 3, "skipped": 0}
    with httpx.Client(base_url=gateway.url, timeout=30) as http:
        active = http.get("/api/v1/admin/rulesets", params={"status": "active"}).json()["data"]
        recorded = {
            r["ruleset_id"]: r["test_suite"]["passed"]
            for r in active
            if r["ruleset_id"] in ("loan-approval", "fraud-signals", "fraud-decision")
        }
        assert recorded == {"loan-approval": 4, "fraud-signals": 2, "fraud-decision": 3}
    assert load_examples(gateway.url, RULES)["skipped"] == 9  # loading again changes nothing
