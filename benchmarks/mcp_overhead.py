"""What the MCP adapter adds over calling the service: per tool call, per deploy, at start-up.

    .venv/bin/python benchmarks/mcp_overhead.py [--runs 5] [--json FILE]

A one-component project (Python's http.server, in its own git repository, on a free port) is
measured three ways, alternating so that machine load hits every side alike:

1. `plan` of the environment: `Shipyard(project).plan()` (a fresh service, as each MCP call
   makes) against the `plan` tool through the SDK's in-process client on 2025-11-25 (legacy:
   JSON-RPC over memory streams) and 2026-07-28 (direct dispatch); the tool also saves the plan;
2. a deploy (`full`, the artifact reused, the running release replaced): `Shipyard.deploy`
   against `plan` + `deploy(plan_id)` through MCP (plan made again and compared, the journal
   polled every 250 ms for progress notifications);
3. start-up: spawning `shipyard -C PROJECT mcp` until its tool list arrives over stdio, against
   `shipyard -C PROJECT validate`; and `python -X importtime` of `shipyard.mcp` (the SDK).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _project as P
import anyio
from mcp import Client, StdioServerParameters

from shipyard.mcp import build_server

CONFIG = """
[project]
name = "tiny"
default_environment = "local"

[environments.local]
target = "local"
root = ".shipyard/local"

[components.web]
path = "web"
start = "python3 -m http.server $PORT --bind 127.0.0.1"
port = {port}
health = {{ http = "/", interval = "50ms", deadline = "10s", stable_for = "100ms" }}
"""
SHIPYARD = str(Path(sys.executable).with_name("shipyard"))


def make_project(folder: Path) -> Path:
    project = folder / "tiny"
    (project / "web").mkdir(parents=True)
    (project / "web" / "index.html").write_text("v1\n")
    (project / "shipyard.toml").write_text(CONFIG.format(port=P.free_ports(1)[0]))
    (project / ".gitignore").write_text(".shipyard/\n")
    P.init_repo(project)
    return project


def timed(fn: Any) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def mcp_call(project: Path, mode: str, calls: list[tuple[str, dict[str, Any]]]) -> float:
    """Seconds for `calls` (each feeds the previous answer's plan_id in), connection excluded."""

    async def body() -> float:
        async with Client(build_server(project), mode=mode) as client:
            start = time.perf_counter()
            answer: dict[str, Any] = {}
            for tool, arguments in calls:
                if "plan_id" in arguments:
                    arguments = {**arguments, "plan_id": answer["plan_id"]}
                result = await client.call_tool(tool, arguments)
                assert not result.is_error, result.content
                answer = result.structured_content or {}
            return time.perf_counter() - start

    return float(anyio.run(body))


def direct_plan(project: Path) -> None:
    with P.opened(project) as sy:
        sy.plan("local")


def direct_deploy(project: Path) -> None:
    with P.opened(project) as sy:
        sy.deploy(sy.plan("local", selection="full"))


def validate(project: Path) -> None:
    subprocess.run([SHIPYARD, "-C", str(project), "validate"], capture_output=True, check=True)


def stdio_start(project: Path) -> float:
    async def body() -> float:
        start = time.perf_counter()
        server = StdioServerParameters(
            command=SHIPYARD, args=["-C", str(project), "mcp"], env=dict(os.environ)
        )
        async with Client(server, mode="legacy") as client:
            await client.list_tools()
            return time.perf_counter() - start

    return float(anyio.run(body))


def import_us(module: str) -> int:
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", f"import {module}"],
        capture_output=True,
        text=True,
        check=True,
    )
    found = re.search(rf"\|\s*(\d+) \| {re.escape(module)}$", done.stderr, re.MULTILINE)
    assert found, done.stderr[-500:]
    return int(found.group(1))


def main() -> None:
    args = P.arguments(__doc__ or "", runs=5)
    figures: dict[str, Any] = {"machine": P.machine()}
    times: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        times.setdefault(name, []).append(value)

    plan_call = [("plan", {"environment": "local"})]
    deploy_calls = [
        ("plan", {"environment": "local", "full": True}),
        ("deploy", {"plan_id": "from the plan"}),
    ]
    with P.short_tmp() as folder:
        project = make_project(folder)
        with P.session(project):
            direct_deploy(project)  # the agent runs, the artifact is built: warm from here
            for _ in range(args.runs):
                add("plan: service", timed(lambda: direct_plan(project)))
                add("plan: MCP 2025-11-25", mcp_call(project, "legacy", plan_call))
                add("plan: MCP 2026-07-28", mcp_call(project, "2026-07-28", plan_call))
            for _ in range(max(1, args.runs // 2)):
                add("deploy: service", timed(lambda: direct_deploy(project)))
                add("deploy: MCP plan+deploy", mcp_call(project, "legacy", deploy_calls))
            for _ in range(max(1, args.runs // 2)):
                add("start: validate (CLI)", timed(lambda: validate(project)))
                add("start: mcp until tools/list", stdio_start(project))
    figures["seconds"] = {name: P.summary(values) for name, values in times.items()}
    med = {name: P.median(values) for name, values in times.items()}
    figures["ratios"] = {
        "plan MCP 2025-11-25 / service": med["plan: MCP 2025-11-25"] / med["plan: service"],
        "plan MCP 2026-07-28 / service": med["plan: MCP 2026-07-28"] / med["plan: service"],
        "deploy MCP / service": med["deploy: MCP plan+deploy"] / med["deploy: service"],
        "start mcp / validate": med["start: mcp until tools/list"] / med["start: validate (CLI)"],
    }
    figures["import_us"] = {m: import_us(m) for m in ("shipyard.service", "shipyard.mcp")}
    P.show(figures)
    P.write_json(args.json, figures)


if __name__ == "__main__":
    main()
