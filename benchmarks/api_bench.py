"""The HTTP API's own cost: request latency of the read endpoints, and how long a journal
event takes to reach a client of the live stream (server-sent events, polled from the store).

A demo copy that is never deployed (no agent), its store filled with 100 deployment records
of 20 journal events each; `create_app` served by uvicorn on 127.0.0.1, an httpx client.

    .venv/bin/python benchmarks/api_bench.py [--runs 60] [--json FILE]     # about 40 s
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from _project import arguments, copy_shop, free_ports, machine, short_tmp, show, write_json

from shipyard.api.app import create_app
from shipyard.api.auth import Token, Tokens
from shipyard.store import DeploymentRecord, Store, new_id

TOKEN = "bench-token-0123456789abcdef"


def fill(project: Path, deployments: int, events: int) -> str:
    """Records written through the store as a deployment would; returns the last id."""
    with Store.open(f"sqlite:///{project / '.shipyard' / 'state.db'}") as store:
        ids = []
        for _ in range(deployments):
            deployment_id = new_id()
            store.create_deployment(
                DeploymentRecord(id=deployment_id, environment="local", kind="full")
            )
            for n in range(events):
                store.append_event(deployment_id, "step", step=f"step-{n}", status="succeeded")
            store.update_deployment(deployment_id, status="failed", error="bench")
            ids.append(deployment_id)
    return ids[-1]


@contextmanager
def served(project: Path, poll: float) -> Iterator[str]:
    port = free_ports(1)[0]
    app = create_app(
        project,
        tokens=Tokens([Token("bench", "admin", TOKEN)]),
        recover_interval=None,
        poll_interval=poll,
    )
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join()


def latencies(client: httpx.Client, path: str, runs: int) -> dict[str, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        answer = client.get(path)
        times.append(time.perf_counter() - start)
        assert answer.status_code == 200, answer.text
    times.sort()
    return {
        "p50_ms": statistics.median(times) * 1000,
        "p90_ms": times[int(len(times) * 0.9)] * 1000,
    }


def delivery(url: str, project: Path, events: int) -> dict[str, float]:
    """Seconds from `append_event` returning to the client reading that event, for a
    deployment left running (its stream stays open)."""
    running = new_id()
    with Store.open(f"sqlite:///{project / '.shipyard' / 'state.db'}") as store:
        store.create_deployment(
            DeploymentRecord(id=running, environment="local", kind="full", status="running")
        )
    written: dict[int, float] = {}
    delays: list[float] = []
    headers = {"Authorization": f"Bearer {TOKEN}"}

    def writer() -> None:
        with Store.open(f"sqlite:///{project / '.shipyard' / 'state.db'}") as store:
            for n in range(events):
                time.sleep(0.05 + (n % 7) * 0.023)  # spread over the poll phase
                record = store.append_event(running, "step", step=f"live-{n}", status="running")
                written[record.seq] = time.perf_counter()

    with (
        httpx.Client(base_url=url, headers=headers, timeout=30) as client,
        client.stream("GET", f"/api/v1/deployments/{running}/stream") as answer,
    ):
        thread = threading.Thread(target=writer)
        thread.start()
        for line in answer.iter_lines():
            if line.startswith("id: "):
                seq = int(line[4:])
                while seq not in written:  # the id line can beat the writer's bookkeeping
                    time.sleep(0.0005)
                delays.append(time.perf_counter() - written[seq])
                if len(delays) == events:
                    break
        thread.join()
    delays.sort()
    return {
        "median_ms": statistics.median(delays) * 1000,
        "max_ms": delays[-1] * 1000,
        "events": len(delays),
    }


def main() -> None:
    args = arguments(__doc__.splitlines()[0], runs=60)
    result: dict[str, Any] = {"machine": machine(), "runs": args.runs}
    with short_tmp() as folder:
        project = copy_shop(folder)
        finished = fill(project, deployments=100, events=20)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        with (
            served(project, poll=0.2) as url,
            httpx.Client(base_url=url, headers=headers, timeout=30) as client,
        ):
            result["requests"] = {
                path: latencies(client, path.replace("{id}", finished), args.runs)
                for path in (
                    "/api/v1/whoami",
                    "/api/v1/graph",
                    "/api/v1/deployments?limit=20",
                    "/api/v1/deployments/{id}",
                    "/api/v1/deployments/{id}/events",
                    "/api/v1/environments/local",
                    "/api/v1/environments/local/plan",
                )
            }
            result["stream_poll_0.2s"] = delivery(url, project, events=30)
        with served(project, poll=0.05) as url:
            result["stream_poll_0.05s"] = delivery(url, project, events=30)
    show(result)
    write_json(args.json, result)


if __name__ == "__main__":
    main()
