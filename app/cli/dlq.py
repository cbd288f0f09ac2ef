"""`quasar dlq list|replay`: inspect and replay dead letters."""

from __future__ import annotations

import datetime as dt
from typing import Any

import typer

from app.digits import is_uint
from app.settings import Settings

__all__ = ["app"]

app = typer.Typer(help="Dead letters (quasar.dlq): list them, replay them onto their original topics.")


def _settings() -> Settings:
    settings = Settings()
    if not settings.kafka_bootstrap:
        typer.echo("error: QUASAR_KAFKA_BOOTSTRAP is not set", err=True)
        raise typer.Exit(1)
    return settings


def _when(ms: int) -> str:
    if ms <= 0:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _ms(when: str | None, what: str) -> int | None:
    """ISO 8601 date/time (UTC unless it says otherwise) or epoch milliseconds -> epoch ms."""
    if when is None:
        return None
    if is_uint(when):
        return int(when)
    try:
        parsed = dt.datetime.fromisoformat(when)
    except ValueError:
        typer.echo(f"error: {what} must be an ISO 8601 time or epoch milliseconds, got {when!r}", err=True)
        raise typer.Exit(2) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return int(parsed.timestamp() * 1000)


_CODE = typer.Option(None, "--code", help="Only dead letters with this error code.")
_CHANNEL = typer.Option(None, "--channel", help="Only dead letters of this channel.")
_PARTITION = typer.Option(None, "--partition", help="Only this DLQ partition.")
_FROM = typer.Option(None, "--from-offset", help="Only DLQ offsets >= this (with --partition for one partition).")
_TO = typer.Option(None, "--to-offset", help="Only DLQ offsets <= this.")
_SINCE = typer.Option(None, "--since", help="Only dead-lettered at/after this time (ISO 8601 or epoch ms).")
_UNTIL = typer.Option(None, "--until", help="Only dead-lettered at/before this time (ISO 8601 or epoch ms).")


def _filter(
    code: str | None,
    channel: str | None,
    partition: int | None,
    from_offset: int | None,
    to_offset: int | None,
    since: str | None,
    until: str | None,
) -> Any:
    from app.worker.dlq import DlqFilter

    return DlqFilter(code, channel, partition, from_offset, to_offset, _ms(since, "--since"), _ms(until, "--until"))


@app.command("list")
def list_cmd(
    code: str | None = _CODE,
    channel: str | None = _CHANNEL,
    partition: int | None = _PARTITION,
    from_offset: int | None = _FROM,
    to_offset: int | None = _TO,
    since: str | None = _SINCE,
    until: str | None = _UNTIL,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
) -> None:
    """List dead letters (oldest first per partition). Read-only: writes nothing to the DLQ."""
    import orjson
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from app.worker.dlq import list_dlq

    where = _filter(code, channel, partition, from_offset, to_offset, since, until)
    entries = list_dlq(_settings(), where=where)
    if as_json:
        for e in entries:
            typer.echo(
                orjson.dumps(
                    {
                        "dlq_partition": e.partition,
                        "dlq_offset": e.offset,
                        "channel": e.channel,
                        "code": e.code,
                        "message": e.message,
                        "attempts": e.attempts,
                        "first_failed_at": e.first_failed_at,
                        "dead_lettered_at": e.dead_lettered_at,
                        "topic": e.topic,
                        "partition": e.original_partition,
                        "offset": e.original_offset,
                        "replayed": e.replayed,
                        "key": (e.key or b"").decode(errors="replace"),
                    }
                ).decode()
            )
        return
    table = Table(title=f"{len(entries)} dead letter(s) ({where.describe()})")
    for col in ("dlq", "channel", "code", "message", "attempts", "first failed", "from", "replayed"):
        table.add_column(col)
    for e in entries:
        # Header text is the producer's: never Rich markup (a "[/]" in a message used to crash the listing).
        table.add_row(
            f"{e.partition}@{e.offset}",
            escape(e.channel),
            escape(e.code),
            escape(e.message[:80]),
            str(e.attempts),
            _when(e.first_failed_at),
            escape(f"{e.topic}[{e.original_partition}]@{e.original_offset}"),
            "yes" if e.replayed else "",
        )
    Console().print(table)


@app.command("replay")
def replay_cmd(
    code: str | None = _CODE,
    channel: str | None = _CHANNEL,
    partition: int | None = _PARTITION,
    from_offset: int | None = _FROM,
    to_offset: int | None = _TO,
    since: str | None = _SINCE,
    until: str | None = _UNTIL,
    to_topic: str | None = typer.Option(None, "--to-topic", help="Replay onto this topic instead of the original."),
    all_: bool = typer.Option(False, "--all", help="Also replay dead letters that were replayed before."),
) -> None:
    """Re-produce dead letters onto their original topics (or --to-topic) with quasar-attempt + 1."""
    from app.worker.dlq import replay_report

    where = _filter(code, channel, partition, from_offset, to_offset, since, until)
    report = replay_report(_settings(), where=where, include_replayed=all_, to_topic=to_topic)
    typer.echo(report.explain())
