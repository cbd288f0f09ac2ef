"""`quasar test FILE|ID` (test suites) and `quasar table to-csv|from-csv` (decision tables in spreadsheets).

`quasar test FILE` runs offline on the pure engine: every workflow and ruleset in the file that has
`tests` (a single document, a bundle `{"rulesets": [...], "workflows": [...]}` as in docs/examples, or
a `{"kind": "testsuite", "target": {...} | "file": "...", "tests": [...]}` document); rulesets in the
file, and in `--rulesets` files, are what `rule` tasks and `call` steps find. Connectors and other side
effects never run: cases stub them (`stubs`). `quasar test ID` runs the stored version's suite on the
server (`POST /api/v1/admin/{rulesets|workflows}/{id}/test-suite`).

Exit codes: 0 every case passed, 1 a case failed, 2 unreadable or invalid document, 3 unknown id.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.table import Table

from app.cli.admin import HeaderOpt, TokenOpt, UrlOpt
from app.cli.client import EXIT_CODES, CliError, open_client

__all__ = ["table_app", "test"]

console = Console()
err_console = Console(stderr=True)
_META = ("version", "status", "rollout_percentage", "created_at", "updated_at", "activated_at", "test_suite")


def _load(path: Path) -> Any:
    try:
        return orjson.loads(path.read_bytes())
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", "BAD_FILE", EXIT_CODES["usage"]) from None
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}", "BAD_JSON", EXIT_CODES["usage"]) from None


def _kind_of(doc: Any) -> str | None:
    if not isinstance(doc, dict):
        return None
    if "steps" in doc and "entry" in doc:
        return "ruleset"
    if "tasks" in doc:
        return "workflow"
    return None


def _collect(doc: Any, base: Path) -> tuple[list[tuple[str, dict[str, Any], Any]], list[dict[str, Any]]]:
    """(targets as (kind, document, tests), ruleset documents) found in a file's JSON."""
    targets: list[tuple[str, dict[str, Any], Any]] = []
    rulesets: list[dict[str, Any]] = []
    items = doc if isinstance(doc, list) else [doc]
    for item in items:
        if not isinstance(item, dict):
            continue
        if item.get("kind") == "testsuite":
            target = item.get("target")
            if isinstance(item.get("file"), str):
                target = _load(base / item["file"])
            kind = _kind_of(target)
            if kind is None or not isinstance(target, dict):
                raise CliError("a testsuite needs `target` (a workflow or ruleset) or `file`", "BAD_FILE", 2)
            targets.append((kind, target, item.get("tests")))
            if kind == "ruleset":
                rulesets.append(target)
            rulesets.extend(r for r in item.get("rulesets", []) if isinstance(r, dict))
            continue
        kind = _kind_of(item)
        if kind is not None:
            if kind == "ruleset":
                rulesets.append(item)
            if item.get("tests") is not None:
                targets.append((kind, item, item["tests"]))
            continue
        inner_targets, inner_rulesets = _collect(item.get("rulesets", []) + item.get("workflows", []), base)
        targets.extend(inner_targets)
        rulesets.extend(inner_rulesets)
    return targets, rulesets


def run_offline(path: Path, extra_rulesets: list[Path]) -> list[dict[str, Any]]:
    """Suite reports for every target in `path` (raises CliError for unreadable or invalid documents)."""
    from app.engine import WorkflowInvalid, compile_workflow
    from app.engine.rules import RulesetInvalid, compile_ruleset
    from app.engine.rules.testsuite import content_digest, run_suite
    from app.testing import ruleset_catalog

    targets, rulesets = _collect(_load(path), path.parent)
    for extra in extra_rulesets:
        rulesets.extend(_collect(_load(extra), extra.parent)[1])
    if not targets:
        raise CliError(f"{path} holds no workflow or ruleset with `tests`", "NO_TESTS", EXIT_CODES["usage"])
    try:
        catalog = ruleset_catalog(rulesets)
    except RulesetInvalid as exc:
        raise CliError(f"invalid ruleset: {exc}", "INVALID", EXIT_CODES["usage"], details=exc.errors) from None
    reports = []
    for kind, doc, tests in targets:
        object_id = str(doc.get(f"{kind}_id") or doc.get("id") or doc.get("name") or kind)
        version = doc.get("version", 1)
        definition = {k: v for k, v in doc.items() if k not in _META and k not in (f"{kind}_id", "id")}
        try:
            if kind == "ruleset":
                target: Any = compile_ruleset(doc, object_id, version if type(version) is int else 1)
            else:
                target = compile_workflow({**doc, "id": object_id})
        except (RulesetInvalid, WorkflowInvalid) as exc:
            errors = exc.errors
            raise CliError(
                f"{kind} {object_id} is invalid: {exc}", "INVALID", EXIT_CODES["usage"], details=errors
            ) from None
        reports.append(run_suite(target, tests, catalog=catalog, digest=content_digest(definition)))
    return reports


async def _run_remote(
    object_id: str, kind: str | None, version: int | None, url: str | None, token: str | None, header: str
) -> list[dict[str, Any]]:
    kinds = [kind] if kind else ["ruleset", "workflow"]
    async with open_client(url, token=token, auth_header=header) as client:
        for i, k in enumerate(kinds):
            try:
                report = await client.admin("POST", f"/{k}s/{object_id}/test-suite", params={"version": version})
            except CliError as exc:
                if exc.exit_code == EXIT_CODES["not_found"] and i + 1 < len(kinds):
                    continue
                raise
            return [report]
    raise CliError(f"no ruleset or workflow {object_id!r}", "NOT_FOUND", EXIT_CODES["not_found"])  # pragma: no cover


def _print(reports: list[dict[str, Any]]) -> None:
    table = Table(title="test suites")
    for col in ("suite", "case", "result", "detail"):
        table.add_column(col)
    for report in reports:
        suite = f"{report['kind']} {report['id']} v{report['version']}"
        for case in report["cases"]:
            result = "[green]pass[/]" if case["passed"] else "[red]FAIL[/]"
            table.add_row(suite, str(case["name"]), result, "; ".join(case["failures"]))
    console.print(table)
    total = sum(r["total"] for r in reports)
    failed = sum(r["failed"] for r in reports)
    colour = "red" if failed else "green"
    console.print(f"[{colour}]{total - failed} passed, {failed} failed[/]")


def test(
    target: str = typer.Argument(..., metavar="FILE|ID", help="a JSON file (offline) or a stored workflow/ruleset id"),
    kind: str | None = typer.Option(
        None, "--kind", help="workflow or ruleset (ID only; default: ruleset, then workflow)"
    ),
    version: int | None = typer.Option(None, help="stored version (ID only; default: the draft, else the latest)"),
    rulesets: list[Path] = typer.Option([], "--rulesets", help="more ruleset files that calls and rule tasks may use"),
    junit: Path | None = typer.Option(None, "--junit", help="also write JUnit XML here"),
    as_json: bool = typer.Option(False, "--json", help="print the JSON reports instead of a table"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Run test suites: exit 0 when every case passes, 1 when one fails, 2 for a bad file, 3 for an unknown id."""
    from app.engine.rules.testsuite import junit_xml

    path = Path(target)
    try:
        if path.suffix == ".json" or path.exists():
            reports = run_offline(path, rulesets)
        else:
            if kind not in (None, "workflow", "ruleset"):
                raise CliError("--kind must be workflow or ruleset", "USAGE", EXIT_CODES["usage"])
            reports = asyncio.run(_run_remote(target, kind, version, url, token, header))
    except CliError as exc:
        err_console.print(f"[red]error[/] {exc.code}: {exc.message}")
        if exc.details:
            err_console.print_json(data=exc.details)
        raise typer.Exit(exc.exit_code) from None
    if junit is not None:
        junit.write_text(junit_xml(reports))
    if as_json:
        console.print_json(orjson.dumps(reports).decode())
    else:
        _print(reports)
    raise typer.Exit(0 if all(r["ok"] for r in reports) else EXIT_CODES["error"])


# -- decision tables as CSV -----------------------------------------------------------------------------
table_app = typer.Typer(help="Decision tables as CSV (one header row, input:/output: columns).", no_args_is_help=True)


def _table_doc(doc: Any, task: str | None) -> dict[str, Any]:
    """The table inside a file: a table document, or the input of a workflow's decision_table task."""
    if isinstance(doc, dict) and "tasks" in doc:
        for t in doc["tasks"]:
            fn = t.get("function", {}) if isinstance(t, dict) else {}
            if fn.get("name") == "decision_table" and (task is None or t.get("id") == task):
                return dict(fn.get("input") or {})
        raise CliError("no decision_table task" + (f" {task!r}" if task else ""), "NOT_FOUND", EXIT_CODES["not_found"])
    if isinstance(doc, dict) and "rules" in doc:
        return doc
    raise CliError(
        "expected a decision table or a workflow with a decision_table task", "BAD_FILE", EXIT_CODES["usage"]
    )


@table_app.command("to-csv")
def to_csv(
    file: Path = typer.Argument(..., help="JSON table, or a workflow holding a decision_table task"),
    task: str | None = typer.Option(None, "--task", help="the task id when the workflow has several tables"),
    output: Path | None = typer.Option(None, "-o", "--output", help="write here (default stdout)"),
) -> None:
    """Export a decision table's columns and rows as CSV."""
    from app.engine.rules.table_csv import table_to_csv

    try:
        text = table_to_csv(_table_doc(_load(file), task))
    except CliError as exc:
        err_console.print(f"[red]error[/] {exc.code}: {exc.message}")
        raise typer.Exit(exc.exit_code) from None
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


@table_app.command("from-csv")
def from_csv(
    file: Path = typer.Argument(..., help="CSV with input:/output: headers"),
    base: Path | None = typer.Option(None, "--base", help="JSON table whose settings (name, hit policy...) to keep"),
    hit_policy: str | None = typer.Option(
        None, "--hit-policy", help="unique, first, priority, any, collect, rule_order"
    ),
    name: str | None = typer.Option(None, "--name", help="table name (metrics and explanations)"),
) -> None:
    """Build a decision table document from CSV (checked like at write time) and print it as JSON."""
    from app.engine.rules import TableInvalid, analyse_table
    from app.engine.rules.table_csv import table_from_csv

    try:
        settings = _table_doc(_load(base), None) if base is not None else {}
        if hit_policy:
            settings["hit_policy"] = hit_policy
        if name:
            settings["name"] = name
        try:
            doc = table_from_csv(file.read_text(), settings)
        except OSError as exc:
            raise CliError(f"cannot read {file}: {exc.strerror}", "BAD_FILE", EXIT_CODES["usage"]) from None
        _, errors = analyse_table(doc)
        if errors:
            raise TableInvalid(errors)
    except TableInvalid as exc:
        err_console.print(f"[red]error[/] INVALID: {exc}")
        err_console.print_json(data=exc.errors)
        raise typer.Exit(EXIT_CODES["usage"]) from None
    except CliError as exc:
        err_console.print(f"[red]error[/] {exc.code}: {exc.message}")
        raise typer.Exit(exc.exit_code) from None
    typer.echo(orjson.dumps(doc, option=orjson.OPT_INDENT_2).decode())
