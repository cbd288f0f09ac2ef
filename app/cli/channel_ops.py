"""`quasar channels pause|resume|replay|consumption`: consumption control of a channel on every worker.

The commands call the admin API's channel operations (app/gateway/admin_channels.py). `replay` is not
the top-level `quasar replay` (impact analysis on retained records, which changes nothing): it moves the
worker group's position, so the records are processed again, side effects included.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import typer
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from app.cli.admin import HeaderOpt, JsonOpt, TokenOpt, UrlOpt, _print_json, _run, channels_app, console
from app.cli.client import AdminClient, CliError

__all__ = ["replay_progress"]


def _switch(object_id: str, verb: str, done: str, url: str | None, token: str | None, header: str) -> None:
    async def job(c: AdminClient) -> None:
        await c.admin("POST", f"/channels/{object_id}/{verb}")
        console.print(f"channel {object_id}: {done}")

    _run(url, token, header, job)


@channels_app.command("pause")
def pause(
    object_id: str = typer.Argument(..., metavar="ID"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Stop consuming the channel on every worker (its records wait on the topic; sync calls get 503)."""
    _switch(object_id, "pause", "paused on every worker", url, token, header)


@channels_app.command("resume")
def resume(
    object_id: str = typer.Argument(..., metavar="ID"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Continue consuming a paused channel where it stopped."""
    _switch(object_id, "resume", "resumed", url, token, header)


@channels_app.command("consumption")
def consumption(
    object_id: str = typer.Argument(..., metavar="ID"),
    as_json: bool = JsonOpt,
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Paused or not, the last replay request, and per partition the committed offset, end and lag."""

    async def job(c: AdminClient) -> None:
        state = (await c.admin("GET", f"/channels/{object_id}/consumption"))["data"]
        if as_json:
            _print_json(state)
            return
        paused = "paused" if state["paused"] else "consuming"
        table = Table(title=f"channel {state['channel']} ({state['topic']}, group {state['group']}): {paused}")
        for col in ("partition", "committed", "end", "lag"):
            table.add_column(col, justify="right")
        for p in state["partitions"]:
            committed = p["committed"] if p["committed"] >= 0 else "none"  # the group never committed here
            table.add_row(str(p["partition"]), str(committed), str(p["end"]), str(p["lag"]))
        console.print(table)
        if state["seek"]:
            seek = state["seek"]
            console.print(f"last replay {seek['id']} from {seek.get('from') or seek.get('from_offset')}")

    _run(url, token, header, job)


@channels_app.command("replay")
def replay(
    object_id: str = typer.Argument(..., metavar="ID"),
    from_: str | None = typer.Option(None, "--from", help="ISO 8601 time, e.g. 2026-12-01T00:00:00Z"),
    from_offset: int | None = typer.Option(None, "--from-offset", help="an offset (on every chosen partition)"),
    partition: list[int] = typer.Option([], "--partition", "-p", help="only this partition (repeatable)"),
    wait: bool = typer.Option(True, "--wait/--no-wait", help="show progress until the replay has caught up"),
    timeout: float = typer.Option(3600.0, help="stop waiting after this many seconds (the replay goes on)"),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Re-process the channel's records from a time or an offset (the worker group's position moves back;
    side effects happen again). Forward in time, it skips records instead."""
    body: dict[str, Any] = {}
    if from_ is not None:
        body["from"] = from_
    if from_offset is not None:
        body["from_offset"] = from_offset
    if partition:
        body["partitions"] = partition

    async def job(c: AdminClient) -> None:
        seek = (await c.admin("POST", f"/channels/{object_id}/offsets", json=body))["data"]
        console.print(f"replay {seek['id']} of channel {seek['channel']} requested ({seek['topic']})")
        if wait:
            await replay_progress(c, object_id, seek["id"], timeout)

    _run(url, token, header, job)


async def replay_progress(c: AdminClient, object_id: str, request_id: str, wait_s: float, poll: float = 0.5) -> None:
    """A progress bar until every partition applied the request and its committed offset reached the end
    offset seen when it was applied (records produced since are ordinary traffic)."""
    deadline = time.monotonic() + wait_s
    targets: dict[int, tuple[int, int]] = {}  # partition -> (applied at, end offset then)
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), console=console
    ) as bar:
        task = bar.add_task("waiting for the workers", total=None)
        while True:
            state = (await c.admin("GET", f"/channels/{object_id}/consumption"))["data"]
            seek = state.get("seek") or {}
            if seek.get("id") != request_id:
                raise CliError(f"replay {request_id} was replaced by a newer request", "REPLACED", 1)
            applied = {int(p): a for p, a in (seek.get("applied") or {}).items() if a.get("request") == request_id}
            ends = {p["partition"]: p for p in state["partitions"]}
            wanted = seek.get("partitions") or sorted(ends)
            for p in wanted:
                if p in applied and p not in targets and p in ends:
                    targets[p] = (int(applied[p]["offset"]), int(ends[p]["end"]))
            total = sum(max(0, end - start) for start, end in targets.values())
            done = sum(
                min(max(0, ends[p]["committed"] - start), max(0, end - start))
                for p, (start, end) in targets.items()
                if p in ends
            )
            waiting = len(wanted) - len(targets)
            description = f"replaying ({waiting} partition(s) not yet applied)" if waiting else "replaying"
            bar.update(task, description=description, total=max(total, 1) if targets else None, completed=done)
            if not waiting and done >= total:
                bar.update(task, description="caught up", total=max(total, 1), completed=max(total, 1))
                return
            if time.monotonic() > deadline:
                raise CliError(f"replay not caught up after {wait_s}s (it goes on)", "TIMEOUT", 1)
            await asyncio.sleep(poll)
