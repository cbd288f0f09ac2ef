"""`quasar topics apply|list`: create/check the topics declared in `topics/`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from app.errors import QuasarError
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.topics import apply_topics, fixed_topic_plans, load_specs
from app.settings import Settings

__all__ = ["app"]

app = typer.Typer(help="Create and check Quasar's Kafka topics (specs in topics/).", no_args_is_help=True)

_STYLE = {"created": "green", "ok": "green", "drift": "yellow", "mismatch": "bold red"}
_EXIT_MISMATCH = 2


def _fail(exc: QuasarError) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error[/]: {exc.message}")
    return typer.Exit(1)


@app.command("apply")
def apply(
    specs_dir: Path | None = typer.Option(None, "--specs", help="Directory of topic specs (default: topics/)."),
    timeout: float = typer.Option(15.0, help="Broker timeout in seconds."),
) -> None:
    """Create missing topics and check existing ones. Exit 0 if all match, 2 on a partition mismatch."""
    settings = Settings()
    try:
        plans = fixed_topic_plans(load_specs(specs_dir), settings)
        results = apply_topics(create_admin(settings), plans, strict=False, timeout=timeout)
    except QuasarError as exc:
        raise _fail(exc) from exc
    table = Table(title=f"topics on {settings.kafka_bootstrap}")
    for column in ("topic", "status", "partitions", "detail"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, f"[{_STYLE[r.status]}]{r.status}[/]", str(r.partitions), r.detail)
    Console().print(table)
    if any(r.status == "mismatch" for r in results):
        raise typer.Exit(_EXIT_MISMATCH)


@app.command("list")
def list_(
    all_topics: bool = typer.Option(False, "--all", help="Also list topics outside QUASAR_TOPIC_PREFIX."),
    timeout: float = typer.Option(15.0, help="Broker timeout in seconds."),
) -> None:
    """List topics and their partition counts."""
    settings = Settings()
    try:
        partitions = topic_partitions(create_admin(settings), timeout)
    except QuasarError as exc:
        raise _fail(exc) from exc
    table = Table(title=f"topics on {settings.kafka_bootstrap}")
    table.add_column("topic")
    table.add_column("partitions", justify="right")
    for name in sorted(partitions):
        if all_topics or name.startswith(settings.topic_prefix):
            table.add_row(name, str(partitions[name]))
    Console().print(table)
