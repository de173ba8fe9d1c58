"""`shipyard serve`: the HTTP API, the dashboard and the environments' controller."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from shipyard.cli.output import command, state

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@command
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (default: loopback only).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8080,
    tokens_file: Annotated[
        Path | None,
        typer.Option(
            "--tokens-file",
            help="Token file: lines `NAME SCOPE VALUE`, scope read|deploy|admin, mode 0600 "
            "(default: .shipyard/api-tokens in the project, when it exists).",
        ),
    ] = None,
) -> None:
    """Serve the HTTP API (/api/v1, OpenAPI at /openapi.json), the dashboard (/) and MCP (/mcp).

    Tokens come from the tokens file and from $SHIPYARD_API_TOKENS (`NAME:SCOPE:VALUE`,
    comma-separated). Without any token the server answers read requests anonymously, and
    only on a loopback address. While it runs it also recovers deployments whose
    orchestrator died.
    """
    import os

    import uvicorn

    from shipyard.api.app import create_app
    from shipyard.api.auth import Tokens, load_tokens
    from shipyard.api.log_redactor import LogRedactor
    from shipyard.errors import UsageError
    from shipyard.mcp import http_app
    from shipyard.service import Shipyard

    cli = state(ctx)
    project = cli.project_dir.resolve()
    svc = Shipyard(project)
    try:
        svc.validate()  # a broken shipyard.toml is said now, with its line
    finally:
        svc.close()
    # Every environment's values now, and later whatever the server reads or a changed
    # secrets file holds: a secret added while the server runs is redacted too.
    redact = LogRedactor(project)

    def mcp_service() -> Shipyard:
        return Shipyard(project, on_secrets=redact.learn)

    tokens = load_tokens(project, dict(os.environ), tokens_file)
    if not tokens and host not in LOOPBACK:
        raise UsageError(
            f"serving on {host} needs at least one token: without one anybody who reaches "
            "the address could read the deployment history",
            hint="add a token (`shipyard serve --help`), or serve on 127.0.0.1",
        )
    app = create_app(
        project,
        tokens=Tokens(tokens, anonymous_scope=None if tokens else "read"),
        # On loopback only loopback names: a page that rebinds its own name to 127.0.0.1
        # must not reach the (maybe anonymous) API. Elsewhere every request needs a token.
        allowed_hosts=(host,) if host in LOOPBACK else ("*",),
        # MCP over streamable HTTP, behind the same tokens; its write tools need deploy.
        mounts=[("/mcp", http_app(project, host=host, service=mcp_service))],
        on_secrets=redact.learn,
    )
    # Every line the server logs (shipyard's, uvicorn's, a bug's traceback) goes through one
    # handler that redacts the secret values of every environment.
    handler = logging.StreamHandler()
    handler.setFormatter(RedactingFormatter(redact, "%(asctime)s %(name)s %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[handler], force=True)
    logging.getLogger("shipyard").setLevel(logging.INFO)
    logging.getLogger("uvicorn").setLevel(logging.INFO)
    shown = f"[{host}]" if ":" in host else host
    cli.err.print(
        cli.text(
            f"shipyard serves {project.name} on http://{shown}:{port}/ "
            f"({len(tokens)} token(s); "
            + ("read-only without a token)" if not tokens else "every request needs one)")
        )
    )
    # log_config=None: uvicorn keeps its loggers on the redacting handler above.
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False)


class RedactingFormatter(logging.Formatter):
    """A log formatter whose whole output, traceback included, passes through a redactor."""

    def __init__(self, redact: Callable[[str], str], fmt: str) -> None:
        super().__init__(fmt)
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        return self.redact(super().format(record))
