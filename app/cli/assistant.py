"""`quasar mcp`: serve the MCP tools to AI assistants (stdio by default, or streamable HTTP on loopback)."""

from __future__ import annotations

import typer

from app.cli.admin import HeaderOpt, TokenOpt, UrlOpt

__all__ = ["mcp"]


def mcp(
    http_port: int | None = typer.Option(None, "--http", help="serve streamable HTTP on 127.0.0.1:PORT/mcp"),
    allow_activation: bool = typer.Option(
        False, "--allow-activation", help="also expose release execution and deletion (policies still apply)"
    ),
    url: str | None = UrlOpt,
    token: str | None = TokenOpt,
    header: str = HeaderOpt,
) -> None:
    """Model Context Protocol server for AI authoring (see docs/assistants.md). Use a scoped editor key."""
    from app.mcp_server import build_server

    del header  # the MCP server authenticates with a bearer token (--token / QUASAR_ADMIN_TOKEN)
    server = build_server(url or None, token, allow_activation=allow_activation)
    if http_port is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=http_port)
