"""A tiny real project for the MCP tests: one component (Python's http.server) in a git
repository, a `local` environment and a protected `prod` one, on free ports."""

from __future__ import annotations

import contextlib
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import anyio
import pytest
import uvicorn
from mcp import Client
from mcp_types import CallToolResult, ElicitRequestParams, ElicitResult, Implementation

from shipyard.service import Shipyard
from tests.conftest import commit_all, free_ports, git

MODES = ("legacy", "2026-07-28")  # legacy negotiates 2025-11-25 with the initialize handshake
SECRET = "tok-Zq8rVb2KxW4mNp7LdS3f"
PROD_SECRET = "tok-Hc5wYt9QeR1uJx6KvB0g"
R = TypeVar("R")
Answer = Callable[[Any, ElicitRequestParams], Awaitable[ElicitResult]]


def _config(local_port: int, prod_port: int) -> str:
    return f"""
[project]
name = "tiny"
default_environment = "local"

[environments.local]
target = "local"
root = ".shipyard/local"
secrets = {{ dotenv = ".env.local" }}

[environments.prod]
target = "local"
root = ".shipyard/prod"
protected = true
secrets = {{ dotenv = ".env.prod" }}

[environments.prod.components.web]
port = {prod_port}

[components.web]
path = "web"
start = "python3 -m http.server $PORT --bind 127.0.0.1"
port = {local_port}
secrets = ["API_TOKEN"]
health = {{ http = "/", interval = "100ms", deadline = "10s", stable_for = "200ms" }}
"""


@pytest.fixture
def project(short_tmp: Path) -> Iterator[Path]:
    """One component serving web/index.html ("v1"), local and protected prod environments."""
    root = short_tmp / "tiny"
    (root / "web").mkdir(parents=True)
    (root / "web" / "index.html").write_text("v1\n")
    (root / "shipyard.toml").write_text(_config(*free_ports(2)))
    (root / ".env.local").write_text(f"API_TOKEN={SECRET}\n")
    (root / ".env.prod").write_text(f"API_TOKEN={PROD_SECRET}\n")  # never committed
    (root / ".gitignore").write_text(".shipyard/\n.env.prod\n")
    git(root, "init", "-q")
    commit_all(root, "v1")
    yield root
    for env in ("local", "prod"):
        if (root / ".shipyard" / env / "agent").exists():
            Shipyard(root).down(env)  # stops its processes and its agent


def port_of(project: Path, env: str) -> int:
    svc = Shipyard(project)
    port = svc.config.components_for(svc.environment(env))["web"].port
    assert port is not None
    return port


def served(project: Path, env: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port_of(project, env)}/", timeout=5) as r:
        return str(r.read().decode())


def answering(action: str, confirm: bool = True, asked: list[str] | None = None) -> Answer:
    async def answer(_ctx: Any, params: ElicitRequestParams) -> ElicitResult:
        if asked is not None:
            asked.append(params.message)
        content = {"confirm": confirm} if action == "accept" else None
        return ElicitResult(action=action, content=content)  # type: ignore[arg-type]

    return answer


def client(server: Any, mode: str, answer: Answer | None = None) -> Client:
    return Client(
        server,
        mode=mode,
        client_info=Implementation(name="test-client", version="1"),
        elicitation_callback=answer,
    )


def ok(result: CallToolResult) -> dict[str, Any]:
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


def error_text(result: CallToolResult) -> str:
    assert result.is_error, result.structured_content
    return " ".join(getattr(c, "text", "") for c in result.content)


def run(coro: Callable[[], Awaitable[R]]) -> R:
    return anyio.run(coro)  # type: ignore[arg-type]


@contextlib.contextmanager
def serving(app: Any) -> Iterator[str]:
    """`app` served by uvicorn on a free loopback port (its URL), stopped on exit."""
    port = free_ports(1)[0]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="uvicorn")
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert server.started, "uvicorn did not start"
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
