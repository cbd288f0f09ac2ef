"""Admin verbs: `quasar workflows|channels|connectors ...`, `quasar backup|restore`, `quasar send`,
`quasar traces get`.

Every command talks to the admin API through `app.cli.client`: a gateway with `--url` (or QUASAR_URL),
else the config topic directly on QUASAR_KAFKA_BOOTSTRAP. Exit codes: 0 ok, 1 error, 2 usage or
validation (bad file, bad JSON, 400), 3 not found (404), 4 conflict (409: stale write, id exists,
a draft already exists).
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

from app.cli.client import EXIT_CODES, AdminClient, CliError, open_client
from app.cli.profile import load_profile

__all__ = [
    "EXIT_HELP",
    "backup",
    "channels_app",
    "connectors_app",
    "restore",
    "rulesets_app",
    "send",
    "testsuites_app",
    "traces_app",
    "workflows_app",
]

EXIT_HELP = (
    "Exit codes: 0 ok, 1 error, 2 usage or validation error, 3 not found, 4 conflict. "
    "Without --url (or QUASAR_URL) commands use the config topic on QUASAR_KAFKA_BOOTSTRAP directly."
)

console = Console()
err_console = Console(stderr=True)

UrlOpt = typer.Option(None, "--url", envvar="QUASAR_URL", help="Gateway base URL; omit to use the config topic.")
TokenOpt = typer.Option(None, "--token", envvar="QUASAR_ADMIN_TOKEN", help="Admin API key / bearer token.")
HeaderOpt = typer.Option(
    "Authorization",
    "--auth-header",
    envvar="QUASAR_ADMIN_AUTH_HEADER",
    help="Header for --token: Authorization (Bearer) or e.g. X-API-Key.",
)
JsonOpt = typer.Option(False, "--json", help="Print raw JSON instead of a table.")
FileOpt = typer.Option(..., "-f", "--file", help="JSON file ('-' for stdin).")
# Commands Orion's guide writes with the file as an argument (`quasar workflows apply wf.json`) take both.
FileOrArgOpt = typer.Option(None, "-f", "--file", help="JSON file ('-' for stdin); or give it as the argument.")
FileArg = typer.Argument(None, metavar="[FILE]", help="JSON file ('-' for stdin); same as -f.")


# -- plumbing -----------------------------------------------------------------------------------------
def _run(
    url: str | None,
    token: str | None,
    header: str,
    job: Callable[[AdminClient], Awaitable[int | None]],
    *,
    default_url: str | None = None,
) -> None:
    """Run `job` with a client; map failures to exit codes."""

    saved = load_profile()  # `quasar config set-server`: used when no --url / --token is given
    url = url or saved.url
    token = token or (saved.token if url == saved.url else None)
    if saved.auth_header and token == saved.token and header == "Authorization":
        header = saved.auth_header

    async def main() -> int | None:
        async with open_client(url or default_url, token=token, auth_header=header) as client:
            return await job(client)

    try:
        code = asyncio.run(main())
    except CliError as exc:
        err_console.print(f"[red]error[/] {exc.code}: {exc.message}")
        if exc.details:
            err_console.print_json(data=exc.details)
        raise typer.Exit(exc.exit_code) from None
    raise typer.Exit(code or 0)


def _file(path: str | None, file: str | None) -> str:
    """The JSON file named as the argument (`quasar workflows apply wf.json`) or with -f."""
    if path is not None and file is not None and path != file:
        raise CliError("give the file once: as the argument or with -f", "USAGE", EXIT_CODES["usage"])
    chosen = path if path is not None else file
    if chosen is None:
        raise CliError("missing the JSON file: give it as the argument or with -f", "USAGE", EXIT_CODES["usage"])
    return chosen


def _read_json(path: str) -> Any:
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}", "BAD_FILE", EXIT_CODES["usage"]) from None
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{path} is not valid JSON: {exc}", "BAD_JSON", EXIT_CODES["usage"]) from None


def _parse_json_arg(text: str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise CliError(f"{what} is not valid JSON: {exc}", "BAD_JSON", EXIT_CODES["usage"]) from None


def _docs(body: Any, plural: str) -> list[Any]:
    """A file holds one document, a list, `{"data": [...]}` (an export) or `{"<plural>": [...]}`."""
    if isinstance(body, list):
        return body
    if isinstance(body, dict):
        for key in ("data", plural):
            if isinstance(body.get(key), list):
                return list(body[key])
        return [body]
    raise CliError(f"expected a JSON object or array of {plural}", "BAD_FILE", EXIT_CODES["usage"])


def _print_json(data: Any) -> None:
    console.print_json(orjson.dumps(data).decode())


def _id_keys(kind: str) -> tuple[str, ...]:
    return (f"{kind}_id", "id") + (("name",) if kind == "connector" else ())


def _doc_id(kind: str, doc: Any) -> str | None:
    if isinstance(doc, dict):
        for key in _id_keys(kind):
            if isinstance(doc.get(key), str) and doc[key]:
                return str(doc[key])
    return None


_COLUMNS = {
    "workflow": ("workflow_id", "name", "version", "status", "rollout_percentage", "tags"),
    "channel": ("channel_id", "name", "version", "status", "channel_type", "protocol", "route_pattern"),
    "connector": ("connector_id", "name", "connector_type", "version", "status"),
    "ruleset": ("ruleset_id", "name", "version", "status", "entry", "tags"),
    "testsuite": ("testsuite_id", "name", "version", "status", "target"),
}


def _table(kind: str, rows: list[dict[str, Any]], title: str) -> Table:
    cols = _COLUMNS[kind]
    table = Table(title=title)
    for col in cols:
        table.add_column(col.replace("_percentage", " %"))
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in cols))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


# -- the per-kind groups ------------------------------------------------------------------------------
def _group(kind: str, plural: str, *, lifecycle: bool) -> typer.Typer:
    app = typer.Typer(help=f"Manage {plural} (exit codes: see quasar --help).", no_args_is_help=True)

    @app.command("list")
    def list_(
        status: str | None = typer.Option(None, help="draft, active or archived"),
        tag: str | None = typer.Option(None, help="only with this tag"),
        limit: int = typer.Option(1000, help="at most this many"),
        as_json: bool = JsonOpt,
        url: str | None = UrlOpt,
        token: str | None = TokenOpt,
        header: str = HeaderOpt,
    ) -> None:
        """List (the latest version of each, or its newest version with --status)."""

        async def job(c: AdminClient) -> None:
            page = await c.admin("GET", f"/{plural}", params={"status": status, "tag": tag, "limit": limit})
            if as_json:
                _print_json(page)
            else:
                console.print(_table(kind, page["data"], f"{plural} ({page['total']})"))

        _run(url, token, header, job)

    @app.command("get")
    def get(
        object_id: str = typer.Argument(..., metavar="ID"),
        version: int | None = typer.Option(None, help="a specific version"),
        url: str | None = UrlOpt,
        token: str | None = TokenOpt,
        header: str = HeaderOpt,
    ) -> None:
        """Show one object as JSON (connector secrets masked)."""

        async def job(c: AdminClient) -> None:
            _print_json((await c.admin("GET", f"/{plural}/{object_id}", params={"version": version}))["data"])

        _run(url, token, header, job)

    @app.command("apply")
    def apply(
        path: str | None = FileArg,
        file: str | None = FileOrArgOpt,
        activate: bool = typer.Option(False, "--activate", help="activate after applying (not connectors)"),
        url: str | None = UrlOpt,
        token: str | None = TokenOpt,
        header: str = HeaderOpt,
    ) -> None:
        """Create or update from a file (GitOps): new ids are created, existing ones get their draft
        replaced (a new draft is made from the latest version when there is none)."""

        async def job(c: AdminClient) -> int:
            docs = _docs(_read_json(_file(path, file)), plural)
            table = Table(title=f"apply {_file(path, file)}")
            for col in ("id", "result", "version", "status"):
                table.add_column(col)
            worst = 0
            for doc in docs:
                try:
                    result, view = await _apply_one(c, kind, plural, doc, activate and lifecycle)
                    table.add_row(
                        _cell(view.get(f"{kind}_id")),
                        result,
                        _cell(view.get("version")),
                        _cell(view.get("status")),
                    )
                except CliError as exc:
                    worst = worst or exc.exit_code
                    table.add_row(_cell(_doc_id(kind, doc)), f"[red]{exc.code}[/]: {exc.message}", "", "")
            console.print(table)
            return worst

        _run(url, token, header, job)

    @app.command("delete")
    def delete(
        object_id: str = typer.Argument(..., metavar="ID"),
        url: str | None = UrlOpt,
        token: str | None = TokenOpt,
        header: str = HeaderOpt,
    ) -> None:
        """Delete an object and all its versions."""

        async def job(c: AdminClient) -> None:
            await c.admin("DELETE", f"/{plural}/{object_id}")
            console.print(f"deleted {kind} {object_id}")

        _run(url, token, header, job)

    @app.command("export")
    def export(
        status: str | None = typer.Option(None),
        tag: str | None = typer.Option(None),
        output: Path | None = typer.Option(None, "-o", "--output", help="write to this file (default stdout)"),
        url: str | None = UrlOpt,
        token: str | None = TokenOpt,
        header: str = HeaderOpt,
    ) -> None:
        """Export as JSON (`{"data": [...]}`), ready for `import`."""

        async def job(c: AdminClient) -> None:
            body = await c.admin("GET", f"/{plural}/export", params={"status": status, "tag": tag})
            raw = orjson.dumps(body, option=orjson.OPT_INDENT_2)
            if output is None:
                sys.stdout.write(raw.decode() + "\n")
            else:
                await asyncio.to_thread(output.write_bytes, raw)
                err_console.print(f"exported {len(body['data'])} {plural} to {output}")

        _run(url, token, header, job)

    @app.command("import")
    def import_(
        path: str | None = FileArg,
        file: str | None = FileOrArgOpt,
        dry_run: bool = typer.Option(False, "--dry-run", help="validate every item and report; write nothing"),
        url: str | None = UrlOpt,
        token: str | None = TokenOpt,
        header: str = HeaderOpt,
    ) -> None:
        """Import from a file (created as new drafts; existing ids are reported as conflicts)."""

        async def job(c: AdminClient) -> int:
            docs = _docs(_read_json(_file(path, file)), plural)
            if dry_run:
                report = await c.admin("POST", f"/{plural}/import", json=docs, params={"dry_run": "true"})
                table = Table(title=f"dry run: import of {len(docs)} {plural} (nothing written)")
                for col in ("#", "id", "result"):
                    table.add_column(col)
                for item in report["items"]:
                    result = "[green]ok[/]" if item["ok"] else f"[red]{item['code']}[/]: {item['error']}"
                    table.add_row(str(item["index"]), _cell(item.get("id")), result)
                console.print(table)
                console.print(f"would import {report['valid']}, would fail {report['failed']}")
                return EXIT_CODES["usage"] if report["failed"] else 0
            failed: list[tuple[str, CliError]] = []
            with Progress(TextColumn("import"), BarColumn(), MofNCompleteColumn(), console=err_console) as bar:
                task = bar.add_task(plural, total=len(docs))
                for doc in docs:
                    try:
                        await c.admin("POST", f"/{plural}", json=doc)
                    except CliError as exc:
                        failed.append((_doc_id(kind, doc) or "?", exc))
                    bar.advance(task)
            for ident, failure in failed:
                err_console.print(f"[red]{ident}[/]: {failure.code}: {failure.message}")
            console.print(f"imported {len(docs) - len(failed)}, failed {len(failed)}")
            return max((e.exit_code for _, e in failed), default=0)

        _run(url, token, header, job)

    if not lifecycle:
        return app

    @app.command("activate")
    def activate_(
        object_id: str = typer.Argument(..., metavar="ID"),
        rollout: int | None = typer.Option(None, "--rollout", help="rollout percentage 1-100 (default 100)"),
        url: str | None = UrlOpt,
        token: str | None = TokenOpt,
        header: str = HeaderOpt,
    ) -> None:
        """Activate the draft."""
        body: dict[str, Any] = {"status": "active"}
        if rollout is not None:
            body["rollout_percentage"] = rollout
        _status(kind, plural, object_id, body, url, token, header)

    @app.command("archive")
    def archive(
        object_id: str = typer.Argument(..., metavar="ID"),
        url: str | None = UrlOpt,
        token: str | None = TokenOpt,
        header: str = HeaderOpt,
    ) -> None:
        """Archive every active version."""
        _status(kind, plural, object_id, {"status": "archived"}, url, token, header)

    @app.command("versions")
    def versions(
        object_id: str = typer.Argument(..., metavar="ID"),
        as_json: bool = JsonOpt,
        url: str | None = UrlOpt,
        token: str | None = TokenOpt,
        header: str = HeaderOpt,
    ) -> None:
        """Version history, newest first."""

        async def job(c: AdminClient) -> None:
            page = await c.admin("GET", f"/{plural}/{object_id}/versions", params={"limit": 1000})
            if as_json:
                _print_json(page)
            else:
                console.print(_table(kind, page["data"], f"{kind} {object_id}: {page['total']} versions"))

        _run(url, token, header, job)

    @app.command("new-version")
    def new_version(
        object_id: str = typer.Argument(..., metavar="ID"),
        url: str | None = UrlOpt,
        token: str | None = TokenOpt,
        header: str = HeaderOpt,
    ) -> None:
        """Copy the latest version into a new draft."""

        async def job(c: AdminClient) -> None:
            view = (await c.admin("POST", f"/{plural}/{object_id}/versions"))["data"]
            console.print(f"{kind} {object_id}: draft version {view['version']}")

        _run(url, token, header, job)

    return app


def _status(
    kind: str,
    plural: str,
    object_id: str,
    body: dict[str, Any],
    url: str | None,
    token: str | None,
    header: str,
) -> None:
    async def job(c: AdminClient) -> None:
        view = (await c.admin("PATCH", f"/{plural}/{object_id}/status", json=body))["data"]
        console.print(
            f"{kind} {object_id}: version {view['version']} {view['status']} ({view.get('rollout_percentage', 100)}%)"
        )

    _run(url, token, header, job)


async def _apply_one(c: AdminClient, kind: str, plural: str, doc: Any, activate: bool) -> tuple[str, dict[str, Any]]:
    if not isinstance(doc, dict):
        raise CliError(f"each {kind} must be a JSON object", "BAD_FILE", EXIT_CODES["usage"])
    ident = _doc_id(kind, doc)
    current = None
    if ident is not None:
        try:
            current = (await c.admin("GET", f"/{plural}/{ident}"))["data"]
        except CliError as exc:
            if exc.exit_code != EXIT_CODES["not_found"]:
                raise
    if current is None:
        view, result = (await c.admin("POST", f"/{plural}", json=doc))["data"], "created"
    else:
        if kind != "connector" and current.get("status") != "draft":
            await c.admin("POST", f"/{plural}/{ident}/versions")
        view, result = (await c.admin("PUT", f"/{plural}/{ident}", json=doc))["data"], "updated"
    if activate:
        view = (await c.admin("PATCH", f"/{plural}/{view[f'{kind}_id']}/status", json={"status": "active"}))["data"]
        result += ", activated"
    return result, view


workflows_app = _group("workflow", "workflows", lifecycle=True)
channels_app = _group("channel", "channels", lifecycle=True)
connectors_app = _group("connector", "connectors", lifecycle=False)
rulesets_app = _group("ruleset", "rulesets", lifecycle=True)
testsuites_app = _group("testsuite", "testsuites", lifecycle=False)


@rulesets_app.command("test")
def ruleset_test(
    object_id: str = typer.Argument(..., metavar="ID"),
    data: str | None = typer.Option(None, "-d", "--data", help="the ruleset's data as JSON"),
    file: str | None = typer.Option(None, "-f", "--file", help='JSON file with {"data", "metadata"}'),
    version: int | None = typer.Option(None, help="version to run (default: the draft, else the latest)"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Dry-run a ruleset on sample data and print its decision path."""

    async def job(c: AdminClient) -> None:
        body = _sample(file, data)
        result = await c.admin("POST", f"/rulesets/{object_id}/test", json=body, params={"version": version})
        table = Table(title=f"decision path of {object_id} v{result.get('version')}")
        for col in ("ruleset", "step", "kind", "taken", "µs"):
            table.add_column(col)
        for step in result.get("decisions", []):
            taken = step.get("next") or (step.get("result") or {}).get("code")
            if "branch" in step:
                taken = f"branch {step['branch']} -> {taken}"
            table.add_row(
                _cell(step.get("ruleset")),
                _cell(step.get("step")),
                _cell(step.get("kind")),
                _cell(taken),
                _cell(step.get("elapsed_us")),
            )
        console.print(table)
        _print_json({k: result[k] for k in ("result", "error") if k in result})

    _run(url, token, header, job)


@rulesets_app.command("validate")
def ruleset_validate(
    path: str | None = FileArg,
    file: str | None = FileOrArgOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Validate ruleset definitions without storing them (exit 2 when any is invalid)."""

    _run(url, token, header, lambda c: _validate_docs(c, "ruleset", _file(path, file)))


@workflows_app.command("rollout")
def rollout(
    object_id: str = typer.Argument(..., metavar="ID"),
    percentage: int = typer.Argument(..., help="traffic share of the newer active version, 1-100"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Split traffic between the two active versions (100 archives the older)."""

    async def job(c: AdminClient) -> None:
        body = {"rollout_percentage": percentage}
        view = (await c.admin("PATCH", f"/workflows/{object_id}/rollout", json=body))["data"]
        console.print(f"workflow {object_id}: version {view['version']} at {view['rollout_percentage']}%")

    _run(url, token, header, job)


@workflows_app.command("test")
def test(
    object_id: str = typer.Argument(..., metavar="ID"),
    data: str | None = typer.Option(None, "-d", "--data", help="sample data as JSON"),
    file: str | None = typer.Option(None, "-f", "--file", help='JSON file with {"data", "metadata"}'),
    version: int | None = typer.Option(None, help="version to run (default: the draft, else the latest)"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Dry-run a workflow on sample data (works on drafts; side effects are not performed)."""

    async def job(c: AdminClient) -> None:
        body = _sample(file, data)
        result = await c.admin("POST", f"/workflows/{object_id}/test", json=body, params={"version": version})
        table = Table(title=f"dry run of {object_id}: matched={result.get('matched')}")
        table.add_column("task")
        table.add_column("result")
        for step in (result.get("trace") or {}).get("steps", []):
            table.add_row(_cell(step.get("task_id")), _cell(step.get("result")))
        console.print(table)
        _print_json({"output": result.get("output"), "errors": result.get("errors")})

    _run(url, token, header, job)


@workflows_app.command("validate")
def validate(
    path: str | None = FileArg,
    file: str | None = FileOrArgOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Validate workflow definitions without storing them (exit 2 when any is invalid)."""

    _run(url, token, header, lambda c: _validate_docs(c, "workflow", _file(path, file)))


async def _validate_docs(c: AdminClient, kind: str, file: str) -> int:
    """POST each document of `file` to `/<kind>s/validate`; exit 2 when any is invalid."""
    bad = 0
    for doc in _docs(_read_json(file), f"{kind}s"):
        report = await c.admin("POST", f"/{kind}s/validate", json=doc)
        ident = _doc_id(kind, doc) or (doc.get("name") if isinstance(doc, dict) else None) or "?"
        if report.get("valid"):
            console.print(f"[green]valid[/] {ident}")
        else:
            bad += 1
            console.print(f"[red]invalid[/] {ident}")
            for e in report.get("errors", []):
                console.print(f"  {e.get('field') or f'({kind})'}: {e.get('message')}")
        for w in report.get("warnings", []):
            text = f"{w.get('field') or ''}: {w.get('message')}" if isinstance(w, dict) else str(w)
            console.print(f"  [yellow]warning[/] {text}")
    return EXIT_CODES["usage"] if bad else 0


def _sample(file: str | None, data: str | None) -> Any:
    """A dry-run body: the file's `{"data", "metadata"}`, else `{"data": <--data>}`."""
    if file is not None:
        return _read_json(file)
    return {"data": _parse_json_arg(data, "--data") if data is not None else {}}


# -- whole-config and data commands -------------------------------------------------------------------
def backup(
    output: Path | None = typer.Option(None, "-o", "--output", help="write to this file (default stdout)"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Back up the whole config (workflows, channels, connectors, all versions; secrets masked)."""

    async def job(c: AdminClient) -> None:
        body = await c.admin("GET", "/backup")
        raw = orjson.dumps(body, option=orjson.OPT_INDENT_2)
        if output is None:
            sys.stdout.write(raw.decode() + "\n")
        else:
            await asyncio.to_thread(output.write_bytes, raw)
            err_console.print(f"backup of {len(body['objects'])} objects written to {output}")

    _run(url, token, header, job)


def restore(
    path: str | None = FileArg,
    file: str | None = FileOrArgOpt,
    prune: bool = typer.Option(True, "--prune/--no-prune", help="delete objects that are not in the backup"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Restore the whole config from a backup file."""

    async def job(c: AdminClient) -> None:
        body = _read_json(_file(path, file))
        with Progress(TextColumn("restore"), BarColumn(), console=err_console, transient=True) as bar:
            bar.add_task("restore", total=None)
            result = await c.admin("POST", "/restore", json=body, params={"prune": str(prune).lower()})
        unchanged = result.get("unchanged", 0)
        console.print(f"restored {result['restored']} (unchanged {unchanged}), deleted {result['deleted']}")

    _run(url, token, header, job)


def send(
    channel: str = typer.Argument(..., help="channel name (or REST path under /api/v1/data/)"),
    data: str = typer.Option(
        "{}", "-d", "--data", help='request data as JSON, or a whole body {"data": ..., "metadata": ...}'
    ),
    is_async: bool = typer.Option(False, "--async", help="submit asynchronously; prints the trace id"),
    url: str | None = typer.Option(None, "--url", envvar="QUASAR_URL", help="gateway (default http://127.0.0.1:8080)"),
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Send a request to a channel through the gateway and print the response."""

    async def job(c: AdminClient) -> None:
        payload = _parse_json_arg(data, "--data")
        path = f"/api/v1/data/{channel.strip('/')}" + ("/async" if is_async else "")
        _print_json(await c.request("POST", path, json=request_body(payload)))

    _run(url, token, header, job, default_url="http://127.0.0.1:8080")


def request_body(given: Any) -> Any:
    """What `send -d` posts: an Orion request body (`{"data": ..., "metadata"?: ...}`, as Orion's CLI
    takes it) is sent as is; anything else is the data and gets wrapped."""
    if isinstance(given, dict) and "data" in given and set(given) <= {"data", "metadata"}:
        return given
    return {"data": given}


traces_app = typer.Typer(help="Read request traces through the gateway.", no_args_is_help=True)


@traces_app.command("get")
def traces_get(
    trace_id: str = typer.Argument(..., metavar="ID"),
    url: str | None = typer.Option(None, "--url", envvar="QUASAR_URL", help="gateway (default http://127.0.0.1:8080)"),
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Show one trace (status, result, steps)."""

    async def job(c: AdminClient) -> None:
        _print_json(await c.request("GET", f"/api/v1/data/traces/{trace_id}"))

    _run(url, token, header, job, default_url="http://127.0.0.1:8080")
