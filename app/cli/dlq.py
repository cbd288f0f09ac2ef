"""`quasar dlq list|replay`: inspect and replay dead letters."""

from __future__ import annotations

import datetime as dt

import typer

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


@app.command("list")
def list_cmd(
    code: str | None = typer.Option(None, "--code", help="Only dead letters with this error code."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line instead of a table."),
) -> None:
    """List dead letters (oldest first)."""
    import orjson
    from rich.console import Console
    from rich.table import Table

    from app.worker.dlq import list_dlq

    entries = list_dlq(_settings(), code=code)
    if as_json:
        for e in entries:
            typer.echo(
                orjson.dumps(
                    {
                        "dlq_offset": e.offset,
                        "channel": e.channel,
                        "code": e.code,
                        "message": e.message,
                        "attempts": e.attempts,
                        "first_failed_at": e.first_failed_at,
                        "topic": e.topic,
                        "partition": e.original_partition,
                        "offset": e.original_offset,
                        "replayed": e.replayed,
                        "key": (e.key or b"").decode(errors="replace"),
                    }
                ).decode()
            )
        return
    table = Table(title=f"{len(entries)} dead letter(s)" + (f" with code {code}" if code else ""))
    for col in ("offset", "channel", "code", "message", "attempts", "first failed", "from", "replayed"):
        table.add_column(col)
    for e in entries:
        table.add_row(
            str(e.offset),
            e.channel,
            e.code,
            e.message[:80],
            str(e.attempts),
            _when(e.first_failed_at),
            f"{e.topic}[{e.original_partition}]@{e.original_offset}",
            "yes" if e.replayed else "",
        )
    Console().print(table)


@app.command("replay")
def replay_cmd(
    code: str | None = typer.Option(None, "--code", help="Only dead letters with this error code."),
    all_: bool = typer.Option(False, "--all", help="Also replay dead letters that were replayed before."),
) -> None:
    """Re-produce dead letters onto their original topics with quasar-attempt + 1."""
    from app.worker.dlq import replay_dlq

    done = replay_dlq(_settings(), code=code, include_replayed=all_)
    typer.echo(f"replayed {len(done)} dead letter(s)")
