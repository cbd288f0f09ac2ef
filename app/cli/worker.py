"""`quasar worker`: run the channel worker (Faust app) against the configured Kafka broker."""

from __future__ import annotations

import typer

from app.cli.startup import settings_waiting_for_cluster

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

    settings = settings_waiting_for_cluster(
        "worker",
        lambda names: (names.config, names.traces, names.dlq),
        instance_id=instance_id or None,
        worker_metrics_port=metrics_port,
    )
    faust_app = create_app(settings)
    level = (log_level or settings.log_level).upper()
    faust.Worker(faust_app, loglevel=level, quiet=True, redirect_stdouts=False).execute_from_commandline()
