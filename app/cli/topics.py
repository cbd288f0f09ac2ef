"""`quasar topics apply|list`: create/check the topics declared in `topics/`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from app.errors import QuasarError
from app.kafka.admin import create_admin, topic_partitions
from app.kafka.topics import (
    TopicResult,
    apply_topics,
    channel_topic_plans,
    drift_fixes,
    fix_drift,
    fixed_topic_plans,
    load_specs,
)
from app.settings import Settings

__all__ = ["app"]

app = typer.Typer(help="Create and check Quasar's Kafka topics (specs in topics/).", no_args_is_help=True)

_STYLE = {"created": "green", "ok": "green", "drift": "yellow", "mismatch": "bold red"}
_EXIT_MISMATCH = 2


def _fail(exc: QuasarError) -> typer.Exit:
    Console(stderr=True).print(f"[bold red]error[/]: {exc.message}")
    return typer.Exit(1)


def _channel_topics(settings: Settings) -> tuple[set[str], set[str]]:
    """(request topics, output topics) of the active channels in the config topic."""
    import asyncio

    from app.config_store.reader import ConfigReader
    from app.kafka.names import TopicNames
    from app.worker.pipeline import routes_of

    async def read() -> tuple[set[str], set[str]]:
        reader = ConfigReader(settings, engine_factory=None, name="quasar-topics")
        try:
            await reader.ready(30)
            routes = routes_of(reader.snapshot, TopicNames(settings.topic_prefix))
        finally:
            await reader.stop()
        return set(routes), {r.output_topic for r in routes.values() if r.output_topic}

    return asyncio.run(read())


@app.command("apply")
def apply(
    specs_dir: Path | None = typer.Option(None, "--specs", help="Directory of topic specs (default: topics/)."),
    timeout: float = typer.Option(15.0, help="Broker timeout in seconds."),
    channels: bool = typer.Option(
        True, "--channels/--no-channels", help="Also the request and output topics of the active channels."
    ),
    fix: bool = typer.Option(False, "--fix", help="Change drifted topic configs back to their specs (plan first)."),
    yes: bool = typer.Option(False, "--yes", "-y", help="With --fix: do not ask before changing configs."),
) -> None:
    """Create missing topics and check existing ones (Quasar's, and the channels' unless --no-channels).

    Exit 0 if all match, 2 on a partition mismatch of a Quasar topic. Channel topics keep their partition
    count (a channel may declare a topic someone else owns). `--fix` prints the config changes, then
    makes them (IncrementalAlterConfigs: only the drifted keys).
    """
    settings = Settings()
    console = Console()
    try:
        specs = load_specs(specs_dir)
        admin = create_admin(settings)
        plans = fixed_topic_plans(specs, settings)
        fixed = {p.name for p in plans}
        results = apply_topics(admin, plans, strict=False, timeout=timeout)
        if channels:  # after the fixed topics: the channels are read from the config topic
            requests, outputs = _channel_topics(settings)
            more = [p for p in channel_topic_plans(specs, settings, requests, outputs) if p.name not in fixed]
            results += apply_topics(admin, more, strict=False, timeout=timeout)
            plans += more
        fixes = drift_fixes(admin, plans, timeout) if fix else []
    except QuasarError as exc:
        raise _fail(exc) from exc
    results = [
        TopicResult(r.name, "ok", r.partitions, r.expected_partitions, f"keeps its {r.partitions} partitions")
        if r.status == "mismatch" and r.name not in fixed
        else r
        for r in results
    ]
    table = Table(title=f"topics on {settings.kafka_bootstrap}")
    for column in ("topic", "status", "partitions", "detail"):
        table.add_column(column)
    for r in results:
        table.add_row(r.name, f"[{_STYLE[r.status]}]{r.status}[/]", str(r.partitions), r.detail)
    console.print(table)
    if fix:
        if not fixes:
            console.print("no config drift to fix")
        else:
            plan = Table(title="config changes (--fix)")
            for column in ("topic", "config", "now", "spec"):
                plan.add_column(column)
            for f in fixes:
                plan.add_row(f.topic, f.key, f.current, f.wanted)
            console.print(plan)
            if not yes and not typer.confirm(f"apply {len(fixes)} config change(s)?"):
                raise typer.Exit(1)
            try:
                fix_drift(admin, fixes, timeout)
                left = drift_fixes(admin, plans, timeout)
            except QuasarError as exc:
                raise _fail(exc) from exc
            if left:
                for f in left:
                    console.print(f"[bold red]still drifted[/]: {f.topic} {f.key}={f.current} (spec {f.wanted})")
                raise typer.Exit(1)
            console.print(f"[green]fixed {len(fixes)} config(s)[/]")
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
