"""`quasar worker`: run the channel worker (Faust app) against the configured Kafka broker."""

from __future__ import annotations

import typer

from app.settings import Settings

__all__ = ["app"]

app = typer.Typer(help="Run the worker: consumes channel topics, runs workflows, produces results.")


@app.callback(invoke_without_command=True)
def worker(
    instance_id: str | None = typer.Option(None, "--instance-id", help="Instance name (default: hostname)."),
    metrics_port: int | None = typer.Option(
        None,
        "--metrics-port",
        help="Prometheus /metrics port (default: QUASAR_WORKER_METRICS_PORT; 0 = off).",
    ),
    log_level: str | None = typer.Option(None, help="Log level (default: QUASAR_LOG_LEVEL)."),
) -> None:
    """Start the worker; stops cleanly on Ctrl-C / SIGTERM (pending results are committed first)."""
    import faust

    from app.worker.app import create_app

    overrides: dict[str, object] = {}
    if instance_id:
        overrides["instance_id"] = instance_id
    if metrics_port is not None:
        overrides["worker_metrics_port"] = metrics_port
    settings = Settings(**overrides)  # type: ignore[arg-type]
    if not settings.kafka_bootstrap:
        typer.echo(
            "error: QUASAR_KAFKA_BOOTSTRAP is not set (or run `quasar dev` for the embedded broker)", err=True
        )
        raise typer.Exit(1)
    # Broker down or topics not applied yet: say so and retry with backoff instead of a traceback + exit.
    from app.kafka.admin import wait_for_cluster
    from app.kafka.names import TopicNames

    names = TopicNames(settings.topic_prefix)
    try:
        wait_for_cluster(
            settings,
            topics=(names.config, names.traces, names.dlq),
            report=lambda line: typer.echo(f"quasar worker: {line}", err=True),
        )
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    faust_app = create_app(settings)
    level = (log_level or settings.log_level).upper()
    faust.Worker(faust_app, loglevel=level, quiet=True, redirect_stdouts=False).execute_from_commandline()
