"""`quasar worker`: run the channel worker (Faust app) against the configured Kafka broker."""

from __future__ import annotations

import typer

from app.cli.startup import settings_waiting_for_cluster
from app.cli.supervise import child_argv, processes_for, supervise
from app.kafka.names import TopicNames
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
    processes: int = typer.Option(
        1,
        "--processes",
        help="Worker processes under one supervising parent, each a consumer-group member (0 = one per core).",
    ),
) -> None:
    """Start the worker; stops cleanly on Ctrl-C / SIGTERM (pending results are committed first)."""
    count = processes_for(processes)
    if count > 1:
        raise typer.Exit(_supervised(count, instance_id, metrics_port, log_level))
    import faust

    from app.worker.app import create_app

    settings = settings_waiting_for_cluster(
        "worker", _required_topics, instance_id=instance_id or None, worker_metrics_port=metrics_port
    )
    _refuse_unsupported_guarantee(settings)
    from app.cli.shutdown import exit_deadline

    class Worker(faust.Worker):
        """Faust's worker with Quasar's logging from its first line and a bounded stop (app/cli/shutdown.py)."""

        def _setup_logging(self) -> None:
            # mode installs its own text handlers here: JSON mode got non-JSON lines until the app started.
            from app.observability.logs import configure_logging

            configure_logging(settings.log_level, settings.log_format, take_over=True)

        def _on_sigint(self) -> None:
            exit_deadline(settings.shutdown_timeout_secs)
            super()._on_sigint()

        def _on_sigterm(self) -> None:
            exit_deadline(settings.shutdown_timeout_secs)
            super()._on_sigterm()

    faust_app = create_app(settings)
    level = (log_level or settings.log_level).upper()
    worker = Worker(faust_app, loglevel=level, quiet=True, redirect_stdouts=False)
    worker.spinner = None  # a terminal spinner writes control sequences into the log stream
    worker.execute_from_commandline()


def _required_topics(names: TopicNames) -> tuple[str, ...]:
    return (names.config, names.traces, names.dlq)


def _refuse_unsupported_guarantee(settings: Settings) -> None:
    """exactly_once on a broker without real transactions: one clear line and exit 2 (before any child
    starts: a supervisor would restart a refusing child forever)."""
    if settings.processing_guarantee != "exactly_once":
        return
    from app.worker.transactions import TransactionsUnsupported, probe_transactions

    try:
        probe_transactions(settings)
    except TransactionsUnsupported as exc:
        typer.echo(f"quasar worker: refusing to run: {exc}", err=True)
        raise typer.Exit(2) from None


def _supervised(count: int, instance_id: str | None, metrics_port: int | None, log_level: str | None) -> int:
    """`count` single-process workers: instance `<id>-<i>`, metrics on `<port>+i` (0 stays off)."""
    settings = Settings()
    base_id = instance_id or settings.instance_id
    if settings.processing_guarantee == "exactly_once":
        # Checked once here, as child 0 (whose transactional id it initialises first).
        _refuse_unsupported_guarantee(
            settings_waiting_for_cluster("worker", _required_topics, instance_id=f"{base_id}-0")
        )
    port = settings.worker_metrics_port if metrics_port is None else metrics_port
    commands = []
    for i in range(count):
        args = ["--processes", "1", "--instance-id", f"{base_id}-{i}", "--metrics-port", str(port + i if port else 0)]
        if log_level:
            args += ["--log-level", log_level]
        commands.append(child_argv("worker", *args))
    return supervise(commands, "worker")
