"""`shipyard mcp`: the MCP server on stdio, for an AI assistant's client to start."""

from __future__ import annotations

from typing import Annotated

import typer

from shipyard.cli.output import command, state


def register(app: typer.Typer) -> None:
    app.command("mcp")(mcp)


@command
def mcp(
    ctx: typer.Context,
    read_only: Annotated[
        bool,
        typer.Option("--read-only", help="Offer no write tool (deploy, promote, rollback) at all."),
    ] = False,
    tools: Annotated[
        str | None,
        typer.Option("--tools", help="Offer only these tools (comma-separated allow-list)."),
    ] = None,
    allow_unconfirmed: Annotated[
        bool,
        typer.Option(
            "--allow-unconfirmed",
            help="Let a client that cannot ask its user (no elicitation) touch protected "
            "environments; recorded in each deployment's created_by.",
        ),
    ] = False,
) -> None:
    """MCP server on stdio: plan, deploy(plan_id), promote, rollback, status, history, health,
    validate_secrets, detect_changes.

    Protected environments are confirmed by the user through the client (elicitation); a
    client that cannot ask is refused unless --allow-unconfirmed. Exits 2 at start when
    shipyard.toml is invalid or --tools names an unknown tool.
    """
    from shipyard.mcp import McpOptions, build_server
    from shipyard.service import Shipyard

    project_dir = state(ctx).project_dir
    Shipyard(project_dir).validate()  # a wrong -C or a broken config: say so now, exit 2
    allowed = None if tools is None else frozenset(t.strip() for t in tools.split(",") if t.strip())
    options = McpOptions(read_only=read_only, tools=allowed, allow_unconfirmed=allow_unconfirmed)
    build_server(project_dir, options).run("stdio")
