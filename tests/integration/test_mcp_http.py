"""`shipyard.mcp.http_app` served for real: uvicorn on a free loopback port, the app mounted at
/mcp under a parent app (as `shipyard serve` mounts it), the SDK's client over streamable HTTP."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from mcp import Client
from starlette.applications import Starlette
from starlette.routing import Mount

from shipyard.mcp import http_app
from tests.integration.mcp_project import (
    answering,
    error_text,
    ok,
    project,
    run,
    served,
    serving,
)

__all__ = ["project"]  # the fixture, imported for pytest


@pytest.fixture
def base_url(project: Path) -> Iterator[str]:
    """The parent app's URL; it runs the MCP app's lifespan inside its own."""
    mcp_app = http_app(project)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        async with mcp_app.router.lifespan_context(mcp_app):
            yield

    parent = Starlette(routes=[Mount("/mcp", app=mcp_app)], lifespan=lifespan)
    with serving(parent) as url:
        yield url


def test_over_streamable_http_a_plan_is_deployed_with_progress(
    project: Path, base_url: str
) -> None:
    progress: list[str] = []

    async def on_progress(_done: float, _total: float | None, message: str | None) -> None:
        progress.append(message or "")

    async def body() -> None:
        async with Client(f"{base_url}/mcp", mode="legacy") as c:
            assert c.protocol_version == "2025-11-25"
            plan = ok(await c.call_tool("plan", {"environment": "local"}))
            deployed = ok(
                await c.call_tool(
                    "deploy", {"plan_id": plan["plan_id"]}, progress_callback=on_progress
                )
            )
        assert deployed["status"] == "succeeded"
        assert progress and progress[0].startswith(f"deployment {deployed['id']}: ")
        assert served(project, "local") == "v1\n"

    run(body)


@pytest.mark.parametrize("mode", ["legacy", "2026-07-28"])
def test_over_streamable_http_a_protected_environment_is_confirmed_through_elicitation(
    project: Path, base_url: str, mode: str
) -> None:
    asked: list[str] = []

    async def body() -> Any:
        declined = Client(f"{base_url}/mcp/", mode=mode, elicitation_callback=answering("decline"))
        async with declined as c:
            plan = ok(await c.call_tool("plan", {"environment": "prod"}))
            refused = await c.call_tool("deploy", {"plan_id": plan["plan_id"]})
            assert "declined by the user" in error_text(refused)
        accepting = answering("accept", asked=asked)
        async with Client(f"{base_url}/mcp/", mode=mode, elicitation_callback=accepting) as c:
            assert c.protocol_version == ("2025-11-25" if mode == "legacy" else mode)
            return ok(await c.call_tool("deploy", {"plan_id": plan["plan_id"]}))

    deployed = run(body)
    assert deployed["environment"] == "prod" and deployed["status"] == "succeeded"
    assert len(asked) == 1 and "protected environment prod" in asked[0]
    assert served(project, "prod") == "v1\n"
