"""The `quasar` command line. One module per command group; this file only wires them."""

from __future__ import annotations

import typer

__all__ = ["cli", "main"]

cli = typer.Typer(
    name="quasar",
    help="Quasar: Kafka-native declarative services runtime.",
    no_args_is_help=True,
    add_completion=False,
)


def _register() -> None:
    # Each group registers itself here; keep alphabetical.
    from app.cli import admin, channel_ops, config, dev, topics

    cli.callback()(config.root_options)
    cli.info.help = f"Quasar: Kafka-native declarative services runtime. {admin.EXIT_HELP}"
    cli.command("backup")(admin.backup)
    cli.add_typer(config.config_app, name="config")
    del channel_ops  # imported for its commands: pause/resume/replay/consumption join the channels group
    cli.add_typer(admin.channels_app, name="channels")
    cli.add_typer(admin.connectors_app, name="connectors")
    cli.add_typer(dev.app, name="dev")
    cli.add_typer(__import__("app.cli.dlq", fromlist=["app"]).app, name="dlq")
    cli.add_typer(__import__("app.cli.flows", fromlist=["app"]).flows_app, name="flows")
    cli.add_typer(__import__("app.cli.gateway", fromlist=["app"]).app, name="gateway")
    cli.command("health")(config.health)
    cli.add_typer(__import__("app.cli.flows", fromlist=["app"]).instances_app, name="instances")
    from app.cli import release

    cli.command("diff")(release.diff)
    cli.command("replay")(release.replay)
    cli.add_typer(release.keys_app, name="keys")
    from app.cli import assistant

    cli.command("mcp")(assistant.mcp)
    cli.add_typer(release.policies_app, name="policies")
    cli.add_typer(release.release_app, name="release")
    cli.command("restore")(admin.restore)
    cli.add_typer(__import__("app.cli.flows", fromlist=["app"]).schedules_app, name="schedules")
    cli.add_typer(admin.rulesets_app, name="rulesets")
    cli.command("send")(admin.send)
    cli.add_typer(__import__("app.cli.rules", fromlist=["app"]).table_app, name="table")
    cli.command("test")(__import__("app.cli.rules", fromlist=["app"]).test)
    cli.add_typer(admin.testsuites_app, name="testsuites")
    cli.add_typer(topics.app, name="topics")
    cli.add_typer(admin.traces_app, name="traces")
    cli.add_typer(admin.workflows_app, name="workflows")
    cli.command("validate-config")(config.validate_config)
    cli.add_typer(__import__("app.cli.worker", fromlist=["app"]).app, name="worker")


def main() -> None:
    from pydantic import ValidationError

    from app.config_file import ConfigFileError
    from app.settings import settings_error_lines

    _register()
    try:
        cli()
    except ConfigFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(2) from None
    except ValidationError as exc:
        if exc.title != "Settings":
            raise
        # A bad QUASAR_* value is the operator's typo: say which one, without a traceback.
        for line in settings_error_lines(exc):
            typer.echo(f"error: {line}", err=True)
        raise SystemExit(2) from None
