"""`shipyard mcp` as an assistant's client starts it: a subprocess speaking MCP on stdio.

The SDK's client plans and deploys a copy of the demo (real agent, free ports) and is refused
a protected environment when its user declines; the MCP Inspector's CLI (from npm) lists the
tools and runs a plan, as an external client would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import Client, StdioServerParameters
from mcp_types import ElicitRequestParams, ElicitResult, Implementation

from shipyard.service import Shipyard
from tests.conftest import RunCli, commit_all, shipyard_executable

INSPECTOR = "@modelcontextprotocol/inspector@2.12.0"  # pinned: its CLI's output is asserted on


def _server(shop: Path) -> StdioServerParameters:
    return StdioServerParameters(
        command=shipyard_executable(), args=["-C", str(shop), "mcp"], env=dict(os.environ)
    )


@pytest.mark.slow
def test_an_assistant_over_stdio_deploys_the_demo_and_is_asked_before_a_protected_one(
    shop: Path,
) -> None:
    config = shop / "shipyard.toml"
    config.write_text(
        config.read_text().replace(
            'root = ".shipyard/staging"', 'root = ".shipyard/staging"\nprotected = true'
        )
    )
    commit_all(shop, "staging is protected")
    asked: list[str] = []

    async def decline(_ctx: Any, params: ElicitRequestParams) -> ElicitResult:
        asked.append(params.message)
        return ElicitResult(action="decline")

    async def body() -> dict[str, Any]:
        info = Implementation(name="stdio-test", version="1")
        async with Client(_server(shop), client_info=info, elicitation_callback=decline) as c:
            plan = await c.call_tool("plan", {"environment": "local"})
            assert plan.structured_content is not None, plan.content
            assert plan.structured_content["components"] == ["backend", "admin", "marketing"]
            deployed = await c.call_tool("deploy", {"plan_id": plan.structured_content["plan_id"]})
            assert not deployed.is_error, deployed.content
            staging = await c.call_tool("plan", {"environment": "staging"})
            assert staging.structured_content is not None
            refused = await c.call_tool(
                "deploy", {"plan_id": staging.structured_content["plan_id"]}
            )
            assert refused.is_error
            assert "declined by the user; nothing was changed" in refused.content[0].text  # type: ignore[union-attr]
            assert deployed.structured_content is not None
            return deployed.structured_content

    deployment = anyio.run(body)
    assert deployment["status"] == "succeeded"
    assert deployment["created_by"].startswith("mcp:stdio-test (")
    assert len(asked) == 1 and "protected environment staging" in asked[0]
    svc = Shipyard(shop)
    port = svc.config.components_for(svc.environment("local"))["backend"].port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/products", timeout=5) as answer:
        assert answer.status == 200
        assert isinstance(json.loads(answer.read()), list | dict)
    assert not (shop / ".shipyard" / "staging" / "agent").exists()  # staging was never touched


def _inspector(shop: Path, *args: str) -> dict[str, Any]:
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("npx (Node.js) is not installed: the MCP Inspector CLI cannot run")
    done = subprocess.run(
        [npx, "-y", INSPECTOR, "--cli", shipyard_executable(), "-C", str(shop), "mcp", *args],
        capture_output=True,
        text=True,
        timeout=240,
    )
    if done.returncode != 0 and ("ENOTFOUND" in done.stderr or "EAI_AGAIN" in done.stderr):
        pytest.skip(f"the npm registry is unreachable, {INSPECTOR} cannot be fetched")
    assert done.returncode == 0, done.stdout + done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


@pytest.mark.slow
def test_the_mcp_inspector_lists_the_tools_and_runs_a_plan(shop: Path) -> None:
    listed = _inspector(shop, "--method", "tools/list")
    assert {t["name"] for t in listed["tools"]} == {
        "plan",
        "deploy",
        "promote",
        "rollback",
        "status",
        "history",
        "health",
        "validate_secrets",
        "detect_changes",
    }
    planned = _inspector(
        shop, "--method", "tools/call", "--tool-name", "plan", "--tool-arg", "environment=local"
    )
    assert not planned.get("isError"), planned
    plan = planned["structuredContent"]
    assert plan["environment"] == "local" and plan["kind"] == "full"
    assert plan["components"] == ["backend", "admin", "marketing"]
    assert len(plan["plan_id"]) == 36 and len(plan["plan_hash"]) == 16


def test_a_wrong_start_exits_2_saying_why(shop: Path, run_cli: RunCli, short_tmp: Path) -> None:
    unknown = run_cli("-C", str(shop), "--json", "mcp", "--tools", "plan,deplyo")
    assert unknown.returncode == 2
    error = json.loads(unknown.stdout)["error"]
    assert error["message"] == "unknown MCP tool 'deplyo' in the allow-list"
    assert "deploy" in error["hint"]
    nowhere = run_cli("-C", str(short_tmp / "none"), "mcp")
    assert nowhere.returncode == 2 and "no shipyard.toml" in nowhere.stderr
    assert "Traceback" not in unknown.stderr + nowhere.stderr
