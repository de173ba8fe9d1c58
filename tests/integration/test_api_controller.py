"""`shipyard serve` is the environments' controller: killed in the middle of a deployment it
started, the next server recovers that deployment on its own (no `shipyard recover`)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.api_fixtures import TOKENS, auth, wait_finished
from tests.conftest import commit_all, free_ports, shipyard_executable
from tests.integration.test_api_deploy import served_release

pytestmark = pytest.mark.slow


class ServeProcess:
    """`shipyard serve` as its own process, stopped by pid."""

    def __init__(self, project: Path, port: int) -> None:
        self.project = project
        self.url = f"http://127.0.0.1:{port}"
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        tokens = ",".join(f"t-{scope}:{scope}:{value}" for scope, value in TOKENS.items())
        with open(self.project.parent / "serve.log", "ab") as log:
            self.proc = subprocess.Popen(
                [shipyard_executable(), "-C", str(self.project), "serve", "--port", str(self.port)],
                env={**os.environ, "SHIPYARD_API_TOKENS": tokens},
                stdout=subprocess.DEVNULL,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{self.url}/api/v1/whoami", headers=auth("read"), timeout=1)
                return
            except httpx.TransportError:
                assert self.proc.poll() is None, (self.project.parent / "serve.log").read_text()
                assert time.monotonic() < deadline, "shipyard serve did not answer"
                time.sleep(0.1)

    def kill(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            self.proc.wait(timeout=60)
        self.proc = None


@pytest.fixture
def serve_process(shop: Path) -> Iterator[ServeProcess]:
    server = ServeProcess(shop, free_ports(1)[0])
    yield server
    server.kill(signal.SIGTERM)


def test_a_restarted_server_recovers_the_deployment_its_predecessor_left(
    shop: Path, serve_process: ServeProcess
) -> None:
    serve_process.start()
    client = httpx.Client(base_url=serve_process.url, headers=auth("deploy"), timeout=60)
    v1 = client.post("/api/v1/deployments", json={}).json()["id"]
    assert wait_finished(client, v1)["status"] == "succeeded"

    # v2's admin never becomes healthy (and may take a minute to say so): the deployment
    # waits in activate:admin, where the server is killed.
    app = shop / "admin" / "app.py"
    app.write_text(
        re.sub(
            r"(def health\(config: Config\)[^\n]*\n)",
            r'\1    return HTTPStatus.SERVICE_UNAVAILABLE, {"ok": False}\n',
            app.read_text(),
            count=1,
        )
    )
    config = shop / "shipyard.toml"
    config.write_text(
        config.read_text().replace(
            'health = { http = "/health" }', 'health = { http = "/health", deadline = "60s" }'
        )
    )
    commit_all(shop, "v2, admin never healthy")
    v2 = client.post("/api/v1/deployments", json={}).json()["id"]
    deadline = time.monotonic() + 60
    while not any(
        e["step"] == "activate:admin" and e["status"] == "running"
        for e in client.get(f"/api/v1/deployments/{v2}/events").json()
    ):
        assert time.monotonic() < deadline, "v2 never reached activate:admin"
        time.sleep(0.1)
    serve_process.kill(signal.SIGKILL)

    serve_process.start()  # its controller finds v2 unfinished, its orchestrator dead
    recovered = wait_finished(client, v2, timeout=60)
    assert recovered["status"] == "rolled_back"
    assert "orchestrator died" in recovered["error"]
    assert served_release(shop) == v1 and served_release(shop, "admin") == v1
    client.close()
