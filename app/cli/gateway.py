"""`quasar gateway`: serve the HTTP bridge (data API, admin API, health) with uvicorn."""

from __future__ import annotations

import socket

import typer

from app.cli.startup import settings_waiting_for_cluster
from app.cli.supervise import child_argv, processes_for, supervise

__all__ = ["app"]

app = typer.Typer(help="Run the HTTP gateway (data + admin API) against the configured Kafka broker.")


@app.callback(invoke_without_command=True)
def gateway(
    host: str | None = typer.Option(None, help="Bind address (default: QUASAR_GATEWAY_HOST, 127.0.0.1)."),
    port: int | None = typer.Option(None, help="Port (default: QUASAR_GATEWAY_PORT, 8080)."),
    instance_id: str | None = typer.Option(
        None, "--instance-id", help="Instance name; picks this gateway's reply partition (default: hostname)."
    ),
    reply_partition: list[int] | None = typer.Option(
        None, "--reply-partition", help="Own these reply partitions (default: hash of the instance id)."
    ),
    log_level: str | None = typer.Option(None, help="uvicorn log level (default: QUASAR_LOG_LEVEL)."),
    workers: int = typer.Option(
        1,
        "--workers",
        help="Gateway processes on the same port (SO_REUSEPORT) under one supervising parent, each with its "
        "own instance id and reply partitions (0 = one per core).",
    ),
    reuse_port: bool = typer.Option(False, "--reuse-port", hidden=True),
) -> None:
    """Start the gateway; it serves once the config is caught up and its reply partitions are positioned."""
    count = processes_for(workers)
    if count > 1:
        raise typer.Exit(_supervised(count, host, port, instance_id, reply_partition or [], log_level))
    import uvicorn

    from app.gateway.app import create_app
    from app.gateway.server import server_config

    settings = settings_waiting_for_cluster(
        "gateway", lambda names: (names.config, names.replies, names.traces), instance_id=instance_id or None
    )
    from app.observability.logs import configure_logging

    configure_logging(log_level or settings.log_level, settings.log_format, take_over=True)
    from app.cli.shutdown import exit_deadline

    application = create_app(settings, reply_partitions=reply_partition or None)
    # Once HTTP has drained, stopping the Kafka clients is bounded (a dead broker must not hold the exit).
    application.state.on_shutdown = lambda: exit_deadline(settings.shutdown_timeout_secs)
    config = server_config(
        application,
        settings,
        host=host or settings.gateway_host,
        port=port or settings.gateway_port,
        log_level=(log_level or settings.log_level).lower(),
        loop="uvloop",
    )
    if reuse_port:
        # One of several gateways on this port: the kernel spreads connections over the listening ones
        # (a child listens only once its lifespan has made it ready).
        sock = socket.socket(socket.AF_INET6 if ":" in config.host else socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((config.host, config.port))
        uvicorn.Server(config).run(sockets=[sock])
    else:
        uvicorn.Server(config).run()


def _supervised(
    count: int,
    host: str | None,
    port: int | None,
    instance_id: str | None,
    partitions: list[int],
    log_level: str | None,
) -> int:
    """`count` gateways on one port: instance `<id>-<i>`; given reply partitions are dealt out round-robin."""
    from app.settings import Settings

    settings = Settings()
    base_id = instance_id or settings.instance_id
    commands = []
    for i in range(count):
        args = ["--workers", "1", "--reuse-port", "--instance-id", f"{base_id}-{i}"]
        args += ["--host", host or settings.gateway_host, "--port", str(port or settings.gateway_port)]
        for p in partitions[i::count]:
            args += ["--reply-partition", str(p)]
        if log_level:
            args += ["--log-level", log_level]
        commands.append(child_argv("gateway", *args))
    return supervise(commands, "gateway")
