"""The MCP server: `shipyard mcp` (stdio) and `http_app` (streamable HTTP, mounted at /mcp)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from shipyard.mcp.server import READ_TOOLS, WRITE_TOOLS, McpOptions, build_server

if TYPE_CHECKING:
    from collections.abc import Callable

    from starlette.applications import Starlette

    from shipyard.service import Shipyard

__all__ = ["READ_TOOLS", "WRITE_TOOLS", "McpOptions", "build_server", "http_app"]


def http_app(
    project_dir: Path,
    *,
    host: str = "127.0.0.1",
    service: Callable[[], Shipyard] | None = None,
    **options: Any,
) -> Starlette:
    """The streamable-HTTP ASGI app of the MCP server, answering at its own root path.

    `options` are those of `McpOptions` (read_only, tools, allow_unconfirmed); `host` is the
    address the server listens on (requests naming another host are refused: DNS rebinding);
    `service` makes each call's Shipyard (as in `build_server`). Mounted under a parent app
    (`Mount("/mcp", app)`), its lifespan must run inside the parent's:
    `async with app.router.lifespan_context(app): ...` (it starts the sessions).
    """
    tools = options.pop("tools", None)
    chosen = McpOptions(tools=None if tools is None else frozenset(tools), **options)
    server = build_server(project_dir, chosen, service=service)
    return server.streamable_http_app(streamable_http_path="/", host=host)
