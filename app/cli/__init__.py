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
    pass


def main() -> None:
    _register()
    cli()
