"""What `quasar worker` and `quasar gateway` do before they start: settings, broker check, topics check."""

from __future__ import annotations

from collections.abc import Callable

import typer

from app.kafka.names import TopicNames
from app.settings import Settings

__all__ = ["settings_waiting_for_cluster"]


def settings_waiting_for_cluster(
    process: str, topics: Callable[[TopicNames], tuple[str, ...]], **overrides: object
) -> Settings:
    """Settings for `process`, returned once the broker answers and `topics` exist.

    Broker down or topics not applied yet: say so on one line per try and retry with backoff
    instead of a traceback and a crash loop.
    """
    from app.kafka.admin import wait_for_cluster

    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})  # type: ignore[arg-type]
    if not settings.kafka_bootstrap:
        typer.echo("error: QUASAR_KAFKA_BOOTSTRAP is not set (or run `quasar dev` for the embedded broker)", err=True)
        raise typer.Exit(1)
    try:
        wait_for_cluster(
            settings,
            topics=topics(TopicNames(settings.topic_prefix)),
            report=lambda line: typer.echo(f"quasar {process}: {line}", err=True),
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    from app.kafka.topics import partition_mismatches

    mismatches = partition_mismatches(settings)
    if mismatches:
        for result in mismatches:
            typer.echo(f"quasar {process}: refusing to run: {result.detail}", err=True)
        raise typer.Exit(2)
    return settings
