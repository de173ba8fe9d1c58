"""A real `shipyard serve` app on a loopback port (uvicorn in a thread), for API tests.

The app is the one `serve` runs (`create_app`), with its lifespan: the controller runs,
and stopping the server waits for the deployments it started.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from shipyard.api.app import create_app
from shipyard.api.auth import Token, Tokens
from tests.conftest import free_ports

TOKENS = {
    "read": "read-token-value-0123456789",
    "deploy": "deploy-token-value-0123456789",
    "admin": "admin-token-value-0123456789",
}


def tokens() -> Tokens:
    return Tokens([Token(f"t-{scope}", scope, value) for scope, value in TOKENS.items()])


def auth(scope: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[scope]}"}


@dataclass
class Server:
    url: str
    project: Path

    def client(self, scope: str | None = "read") -> httpx.Client:
        return httpx.Client(base_url=self.url, headers=auth(scope) if scope else {}, timeout=60)


def serve(project: Path, recover_interval: float | None = 0.5) -> Iterator[Server]:
    """Run the app on a free port until the generator is closed."""
    port = free_ports(1)[0]
    app = create_app(project, tokens=tokens(), recover_interval=recover_interval)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="test-uvicorn")
    thread.start()
    for _ in range(200):
        if server.started or not thread.is_alive():
            break
        time.sleep(0.05)
    assert server.started, "the API server did not start"
    try:
        yield Server(f"http://127.0.0.1:{port}", project)
    finally:
        server.should_exit = True
        thread.join(timeout=120)


def sse_events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """Parse server-sent events: each as {"id", "event", "data"} (data decoded from JSON)."""
    event: dict[str, Any] = {}
    for line in lines:
        if line == "":
            if "data" in event:
                event["data"] = json.loads(event["data"])
                yield event
            event = {}
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            event[field] = value[1:] if value.startswith(" ") else value


def wait_finished(client: httpx.Client, deployment_id: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        data: dict[str, Any] = client.get(f"/api/v1/deployments/{deployment_id}").json()
        if data["status"] not in ("pending", "running", "rolling_back"):
            return data
        assert time.monotonic() < deadline, f"deployment still {data['status']}"
        time.sleep(0.2)
