"""`quasar release …`, `quasar policies …`, `quasar keys …`: governed change from the command line.

Same plumbing as the other admin verbs (gateway with --url, or the config topic directly); the config fold
decides every step, so the CLI gets the same answers as the REST API (exit 4 on a policy refusal: 409).
"""

from __future__ import annotations

from typing import Any

import typer
from rich.table import Table

from app.cli.admin import FileOpt, HeaderOpt, JsonOpt, TokenOpt, UrlOpt, _print_json, _read_json, _run, console
from app.cli.client import AdminClient

__all__ = ["diff", "keys_app", "policies_app", "release_app", "replay"]

release_app = typer.Typer(help="Request, approve and execute releases (see docs/releases.md).", no_args_is_help=True)
policies_app = typer.Typer(help="Release policies (admin).", no_args_is_help=True)
keys_app = typer.Typer(help="Admin API keys with roles (admin).", no_args_is_help=True)


def _release_table(items: list[dict[str, Any]], title: str) -> Table:
    table = Table(title=title)
    for col in ("id", "action", "state", "author", "approvals", "needed", "requested_at"):
        table.add_column(col)
    for r in items:
        table.add_row(
            r["id"],
            str(r.get("action")),
            str(r.get("state")),
            str(r.get("author")),
            ", ".join(r.get("approvals", [])) or "-",
            str(r.get("approvals_needed", 0)),
            str(r.get("requested_at", "")),
        )
    return table


def _show(data: dict[str, Any], as_json: bool) -> None:
    if as_json:
        _print_json(data)
    else:
        console.print(_release_table([data], f"release {data['id']}"))


@release_app.command("request")
def request(
    kind: str = typer.Argument(..., help="workflow, channel, ruleset or flow"),
    object_id: str = typer.Argument(..., metavar="ID"),
    version: int | None = typer.Option(None, help="the draft version (default: the current draft)"),
    rollout: int = typer.Option(100, "--rollout", help="rollout percentage"),
    comment: str | None = typer.Option(None, "-m", "--comment"),
    as_json: bool = JsonOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Ask for the activation of a draft version."""
    body = {"kind": kind, "id": object_id, "action": "activate", "version": version, "rollout_percentage": rollout}
    body |= {"comment": comment} if comment else {}

    async def job(c: AdminClient) -> None:
        _show(
            (await c.admin("POST", "/releases", json={k: v for k, v in body.items() if v is not None}))["data"], as_json
        )

    _run(url, token, header, job)


@release_app.command("rollback")
def rollback(
    kind: str = typer.Argument(...),
    object_id: str = typer.Argument(..., metavar="ID"),
    to: int = typer.Option(..., "--to", help="the version to return to"),
    execute: bool = typer.Option(False, "--execute", help="execute at once when no approval is needed"),
    comment: str | None = typer.Option(None, "-m", "--comment"),
    as_json: bool = JsonOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Request a rollback (a new release that activates a copy of an older version)."""
    body: dict[str, Any] = {"kind": kind, "id": object_id, "action": "rollback", "version": to}
    body |= {"comment": comment} if comment else {}

    async def job(c: AdminClient) -> None:
        rel = (await c.admin("POST", "/releases", json=body))["data"]
        if execute and rel["state"] == "approved":
            rel = (await c.admin("POST", f"/releases/{rel['id']}/execute", json={}))["data"]
        _show(rel, as_json)

    _run(url, token, header, job)


def _review(verb: str, path: str) -> None:
    @release_app.command(verb)
    def command(
        release_id: str = typer.Argument(..., metavar="RELEASE"),
        comment: str | None = typer.Option(None, "-m", "--comment"),
        as_json: bool = JsonOpt,
        url: str | None = UrlOpt,
        token: str | None = TokenOpt,
        header: str = HeaderOpt,
    ) -> None:
        async def job(c: AdminClient) -> None:
            body = {"comment": comment} if comment else {}
            _show((await c.admin("POST", f"/releases/{release_id}/{path}", json=body))["data"], as_json)

        _run(url, token, header, job)

    command.__doc__ = f"{verb.capitalize()} a release."


_review("approve", "approve")
_review("reject", "reject")
_review("cancel", "cancel")
_review("comment", "comments")


@release_app.command("execute")
def execute(
    release_id: str = typer.Argument(..., metavar="RELEASE"),
    rollout: int | None = typer.Option(None, "--rollout", help="rollout percentage (continue a rollout)"),
    as_json: bool = JsonOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Execute an approved release."""

    async def job(c: AdminClient) -> None:
        body = {"rollout_percentage": rollout} if rollout is not None else {}
        _show((await c.admin("POST", f"/releases/{release_id}/execute", json=body))["data"], as_json)

    _run(url, token, header, job)


@release_app.command("status")
def status(
    release_id: str | None = typer.Argument(None, metavar="[RELEASE]"),
    state: str | None = typer.Option(None, help="only releases in this state"),
    as_json: bool = JsonOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """One release with its events, or every release (newest first)."""

    async def job(c: AdminClient) -> None:
        if release_id:
            data = (await c.admin("GET", f"/releases/{release_id}"))["data"]
            if as_json:
                _print_json(data)
                return
            console.print(_release_table([data], f"release {release_id}"))
            events = Table(title="events")
            for col in ("type", "by", "role", "at", "comment"):
                events.add_column(col)
            for e in data["events"]:
                events.add_row(*(str(e.get(k, "")) for k in ("type", "by", "role", "at", "comment")))
            console.print(events)
            return
        page = await c.admin("GET", "/releases", params={"state": state})
        if as_json:
            _print_json(page)
        else:
            console.print(_release_table(page["data"], f"releases ({page['total']})"))

    _run(url, token, header, job)


@policies_app.command("apply")
def policy_apply(
    name: str = typer.Argument(...),
    file: str = FileOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Create or replace a release policy from a JSON file."""
    doc = _read_json(file)

    async def job(c: AdminClient) -> None:
        _print_json((await c.admin("PUT", f"/policies/{name}", json=doc))["data"])

    _run(url, token, header, job)


@policies_app.command("list")
def policy_list(url: str | None = UrlOpt, token: str | None = TokenOpt, header: str = HeaderOpt) -> None:
    """List release policies."""

    async def job(c: AdminClient) -> None:
        _print_json((await c.admin("GET", "/policies"))["data"])

    _run(url, token, header, job)


@keys_app.command("create")
def key_create(
    name: str = typer.Argument(...),
    role: str = typer.Option(..., help="reader, editor, approver or admin"),
    ids: list[str] = typer.Option([], "--id", help="scope: object id glob (repeatable)"),
    tags: list[str] = typer.Option([], "--tag", help="scope: tag glob (repeatable)"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Create a key; it is printed once and stored only as a hash."""
    body: dict[str, Any] = {"name": name, "role": role}
    if ids or tags:
        body["scope"] = {"ids": ids, "tags": tags}

    async def job(c: AdminClient) -> None:
        data = (await c.admin("POST", "/keys", json=body))["data"]
        console.print(f"[bold]{data['key']}[/]  (shown once: store it now)")

    _run(url, token, header, job)


@keys_app.command("list")
def key_list(url: str | None = UrlOpt, token: str | None = TokenOpt, header: str = HeaderOpt) -> None:
    """List keys (names, roles and scopes; never the keys)."""

    async def job(c: AdminClient) -> None:
        table = Table(title="admin keys")
        for col in ("name", "role", "scope", "status", "created_by"):
            table.add_column(col)
        for k in (await c.admin("GET", "/keys"))["data"]:
            scope = k["scope"]
            table.add_row(k["name"], k["role"], str(scope) if scope.get("ids") or scope.get("tags") else "all",
                          k["status"], k["created_by"])  # fmt: skip
        console.print(table)

    _run(url, token, header, job)


@keys_app.command("revoke")
def key_revoke(name: str = typer.Argument(...), url: str | None = UrlOpt, token: str | None = TokenOpt,
               header: str = HeaderOpt) -> None:  # fmt: skip
    """Revoke a key on every gateway."""

    async def job(c: AdminClient) -> None:
        await c.admin("DELETE", f"/keys/{name}")
        console.print(f"revoked {name}")

    _run(url, token, header, job)


def diff(
    kind: str = typer.Argument(..., help="workflow, channel, ruleset or flow"),
    object_id: str = typer.Argument(..., metavar="ID"),
    frm: int | None = typer.Option(None, "--from", help="base version (default: the newest active)"),
    to: int | None = typer.Option(None, "--to", help="version to compare (default: the draft, else the latest)"),
    fail_on_breaking: bool = typer.Option(False, "--fail-on-breaking", help="exit 1 when a change is breaking"),
    as_json: bool = JsonOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Semantic diff of two versions (tasks, conditions, mappings, rows, steps) and its breaking changes."""

    async def job(c: AdminClient) -> int:
        data = (await c.admin("GET", f"/{kind}s/{object_id}/diff", params={"from": frm, "to": to}))["data"]
        if as_json:
            _print_json(data)
        else:
            table = Table(title=f"{kind} {object_id}: v{data['from']} -> v{data['to']}")
            for col in ("change", "path", "before", "after"):
                table.add_column(col, overflow="fold")
            for ch in data["changes"]:
                table.add_row(ch["change"], ch["path"], _short(ch.get("before")), _short(ch.get("after")))
            console.print(table)
            for b in data["breaking"]:
                console.print(f"[red]breaking[/] {b}")
        return 1 if fail_on_breaking and data["breaking"] else 0

    _run(url, token, header, job)


def _short(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= 80 else text[:77] + "..."


def replay(
    channel: str = typer.Option(..., "--channel", help="the channel whose retained records are replayed"),
    candidate: str = typer.Option(..., "--candidate", help="WORKFLOW@VERSION to compare with the live version"),
    frm: str | None = typer.Option(None, "--from", help="an offset or an ISO-8601 time (default: oldest retained)"),
    limit: int = typer.Option(1000, "--limit", help="at most this many records"),
    release: str | None = typer.Option(None, "--release", help="attach the summary to this release"),
    write_tests: str | None = typer.Option(None, "--write-tests", help="write changed cases as a test suite (JSON)"),
    fail_on_change: bool = typer.Option(False, "--fail-on-change", help="exit 1 when any answer changes"),
    as_json: bool = JsonOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Impact analysis: replay a channel's retained records through a candidate version (side effects
    stubbed, nothing produced) and report consistent / changed / errored answers."""
    wid, _, ver = candidate.partition("@")
    if not ver.isdigit():
        raise typer.BadParameter("--candidate is WORKFLOW@VERSION, e.g. pricing@3")
    body: dict[str, Any] = {"candidate": {"workflow_id": wid, "version": int(ver)}, "limit": limit}
    if frm is not None:
        body["from"] = int(frm) if frm.isdigit() else frm
    if release:
        body["release"] = release
    if write_tests:
        body["write_tests"] = True

    async def job(c: AdminClient) -> int:
        with console.status(f"replaying up to {limit} records of {channel} ..."):
            data = (await c.admin("POST", f"/channels/{channel}/replay", json=body))["data"]
        if write_tests:
            import asyncio
            from pathlib import Path

            import orjson

            suite = orjson.dumps({"tests": data.pop("tests", [])}, option=orjson.OPT_INDENT_2)
            await asyncio.to_thread(Path(write_tests).write_bytes, suite)
        if as_json:
            _print_json(data)
        else:
            table = Table(title=f"{channel}: {wid} v{data['live_version']} (live) vs v{data['candidate_version']}")
            for col in ("records", "consistent", "changed", "errored", "undecodable"):
                table.add_column(col)
            table.add_row(*(str(data[k]) for k in ("total", "consistent", "changed", "errored", "undecodable")))
            console.print(table)
            for ex in data["examples"][:5]:
                console.print(f"[yellow]{ex['kind']}[/] {ex['where']} key={ex['key']}: {_short(ex['changes'])}")
        return 1 if fail_on_change and (data["changed"] or data["errored"]) else 0

    _run(url, token, header, job)
