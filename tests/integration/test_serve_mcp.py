"""MCP under `shipyard serve`: /mcp sits behind the API's bearer tokens, and its write tools
need the deploy scope (a read token may plan and look, not deploy). Real uvicorn, the app
`create_app` builds with the MCP app mounted as `serve` mounts it, the SDK's HTTP client."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from shipyard.api.app import create_app
from shipyard.api.auth import Token, Tokens
from shipyard.mcp import http_app
from shipyard.service import Shipyard
from tests.integration.mcp_project import error_text, ok, project, run, served, serving

__all__ = ["project"]  # the fixture, imported for pytest

READ = "read-" + "Qm4vX8pL2zR7kT1w"
DEPLOY = "deploy-" + "Hs6yB3nJ9cW5dF0q"


@pytest.fixture
def base_url(project: Path) -> Iterator[str]:
    tokens = Tokens([Token("viewer", "read", READ), Token("ci", "deploy", DEPLOY)])
    app = create_app(
        project, tokens=tokens, mounts=[("/mcp", http_app(project))], recover_interval=None
    )
    with serving(app) as url:
        yield url


def client(base_url: str, token: str) -> Client:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=120)
    return Client(streamable_http_client(f"{base_url}/mcp/", http_client=http), mode="legacy")


def test_mcp_under_serve_needs_a_token_and_the_deploy_scope_to_write(
    project: Path, base_url: str
) -> None:
    with httpx2.Client() as anonymous:
        refused = anonymous.post(f"{base_url}/mcp/", json={})
    assert refused.status_code == 401  # tokens configured: no anonymous access to /mcp

    async def body() -> dict[str, object]:
        async with client(base_url, READ) as viewer:
            plan = ok(await viewer.call_tool("plan", {"environment": "local"}))
            said = error_text(await viewer.call_tool("deploy", {"plan_id": plan["plan_id"]}))
            assert "token 'viewer' has the read scope; this tool needs deploy" in said
        async with client(base_url, DEPLOY) as ci:
            return ok(await ci.call_tool("deploy", {"plan_id": plan["plan_id"]}))

    deployed = run(body)
    assert deployed["status"] == "succeeded"
    assert served(project, "local") == "v1\n"
    svc = Shipyard(project)
    try:
        record = svc.deployment(str(deployed["id"])).to_dict()
        history = svc.history("local")
    finally:
        svc.close()
    assert "token ci" in record["created_by"]
    assert len(history) == 1  # the viewer's attempt started nothing
