"""`quasar mcp`: AI authoring over the Model Context Protocol (the official `mcp` SDK's `MCPServer`).

The server is a client of the admin API, like the CLI: it authenticates with its own (ideally scoped)
admin key, so roles, scopes, release policies and the audit log apply to it as to any principal. It can
read, validate, write drafts, dry-run, run test suites, diff and request releases. Executing releases
and deleting objects are only exposed when started with `--allow-activation`, and then still go through
the release policy (the config fold decides).
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from app.cli.client import CliError, open_client

__all__ = ["build_server"]

_KINDS = ("workflow", "ruleset", "channel", "connector", "flow")
INSTRUCTIONS = (
    "Quasar runs declarative workflows (JSONLogic) and rulesets on Kafka. Author changes as drafts, validate "
    "and dry-run them, run their test suites, read the semantic diff, then request a release: a human approves "
    "and executes it. Connector secrets are masked; never ask for them."
)


def _plural(kind: str) -> str:
    if kind not in _KINDS:
        raise ToolError(f"kind must be one of {', '.join(_KINDS)}")
    return f"{kind}s"


def build_server(url: str | None, token: str | None, *, allow_activation: bool = False) -> MCPServer:
    """The MCP server, bound to the gateway at `url` (None: the config topic directly) with `token`."""
    server: MCPServer = MCPServer("quasar", instructions=INSTRUCTIONS)

    async def call(method: str, path: str, *, json: Any = None, params: dict[str, Any] | None = None) -> Any:
        async with open_client(url, token=token) as client:
            try:
                return await client.admin(method, path, json=json, params=params)
            except CliError as exc:  # the tool result carries the API's own error
                raise ToolError(f"{exc.code}: {exc.message}") from None

    @server.tool()
    async def list_functions() -> Any:
        """Every task function (built-in and plugins) with what it does and whether it has side effects."""
        from app.engine.functions import default_registry

        reg = default_registry()
        return [
            {"name": n, "description": s.description, "side_effects": s.side_effects}
            for n in reg.names()
            if (s := reg.get(n)) is not None
        ]

    @server.tool()
    async def list_objects(kind: str, status: str | None = None) -> Any:
        """List workflows, rulesets, channels, connectors (secrets masked) or flows."""
        return (await call("GET", f"/{_plural(kind)}", params={"status": status, "limit": 1000}))["data"]

    @server.tool()
    async def get_object(kind: str, object_id: str, version: int | None = None) -> Any:
        """One object (a version of it) as JSON."""
        return (await call("GET", f"/{_plural(kind)}/{object_id}", params={"version": version}))["data"]

    @server.tool()
    async def validate(kind: str, definition: dict[str, Any]) -> Any:
        """Validate a workflow or ruleset definition without saving it (field errors if invalid)."""
        if kind not in ("workflow", "ruleset"):
            raise ToolError("validate takes a workflow or a ruleset")
        return await call("POST", f"/{_plural(kind)}/validate", json=definition)

    @server.tool()
    async def create_draft(kind: str, definition: dict[str, Any]) -> Any:
        """Create a workflow, ruleset, channel or flow as a draft (version 1)."""
        if kind == "connector":
            raise ToolError("connectors go live at once: create them through an operator")
        return (await call("POST", f"/{_plural(kind)}", json=definition))["data"]

    @server.tool()
    async def update_draft(kind: str, object_id: str, definition: dict[str, Any]) -> Any:
        """Replace the draft of an object (create one first with new_version if it has none)."""
        if kind == "connector":
            raise ToolError("connectors go live at once: change them through an operator")
        return (await call("PUT", f"/{_plural(kind)}/{object_id}", json=definition))["data"]

    @server.tool()
    async def new_version(kind: str, object_id: str) -> Any:
        """Start a new draft from the latest version."""
        return (await call("POST", f"/{_plural(kind)}/{object_id}/versions"))["data"]

    @server.tool()
    async def dry_run(object_id: str, data: dict[str, Any] | None = None, version: int | None = None) -> Any:
        """Run a workflow on sample data with side effects stubbed; returns the result and the step trace."""
        return await call(
            "POST", f"/workflows/{object_id}/test", json={"data": data or {}}, params={"version": version}
        )

    @server.tool()
    async def run_test_suite(kind: str, object_id: str, version: int | None = None) -> Any:
        """Run the test suite attached to a workflow or ruleset version on the server."""
        return await call("POST", f"/{_plural(kind)}/{object_id}/test-suite", params={"version": version})

    @server.tool()
    async def diff(kind: str, object_id: str, from_version: int | None = None, to_version: int | None = None) -> Any:
        """Semantic diff of two versions (default: the live version -> the draft) with breaking changes."""
        params = {"from": from_version, "to": to_version}
        return (await call("GET", f"/{_plural(kind)}/{object_id}/diff", params=params))["data"]

    @server.tool()
    async def request_release(
        kind: str, object_id: str, comment: str | None = None, rollout_percentage: int = 100
    ) -> Any:
        """Ask for the draft to go live. A human approves (and executes) it per the release policy."""
        body: dict[str, Any] = {"kind": kind, "id": object_id, "rollout_percentage": rollout_percentage}
        if comment:
            body["comment"] = comment
        return (await call("POST", "/releases", json=body))["data"]

    @server.tool()
    async def release_status(release_id: str) -> Any:
        """A release with its approvals, diff and events."""
        return (await call("GET", f"/releases/{release_id}"))["data"]

    @server.tool()
    async def read_trace(trace_id: str) -> Any:
        """The trace of one processed message (status, result, errors)."""
        async with open_client(url, token=token) as client:
            try:
                return await client.request("GET", f"/api/v1/data/traces/{trace_id}")
            except CliError as exc:
                raise ToolError(f"{exc.code}: {exc.message}") from None

    if allow_activation:

        @server.tool()
        async def execute_release(release_id: str) -> Any:
            """Execute an approved release (the release policy still decides)."""
            return (await call("POST", f"/releases/{release_id}/execute", json={}))["data"]

        @server.tool()
        async def delete_object(kind: str, object_id: str) -> Any:
            """Delete an object and all its versions (refused where a release policy governs active versions)."""
            await call("DELETE", f"/{_plural(kind)}/{object_id}")
            return {"deleted": f"{kind}/{object_id}"}

    return server
