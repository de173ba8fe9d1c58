"""The agent with many releases: concurrent stops, parallel retirement, incremental state."""

from __future__ import annotations

import os
import socket
import threading
from typing import Any

from shipyard.agent import AgentClient, AgentRequestError
from tests.agent_fixtures.agent_harness import (
    AgentHarness,
    free_port,
    http_get,
    start_app,
    wait_for,
)

pytest_plugins = ["tests.agent_fixtures.agent_plugin"]


def _open_tunnel(port: int) -> socket.socket:
    """An `Upgrade: echo` tunnel through `port`: in flight until it is closed."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10.0)
    sock.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        assert chunk, head
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    sock.sendall(b"ping")
    assert sock.recv(4) == b"ping"
    return sock


def _stop_in_thread(client: AgentClient, results: list[Any]) -> threading.Thread:
    def run() -> None:
        try:
            results.append(client.stop_release("web", "w1", force=True))
        except AgentRequestError as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_two_stops_of_a_release_while_its_links_drain_both_succeed(agent: AgentHarness) -> None:
    """A rollback stopping a release that something else (the lease lapsing, `down`) stops at
    the same time must not fail: the release ends stopped and both callers hear so."""
    client = agent.client
    for dep in ("d1", "d2"):
        start_app(client, dep, "r1")
        client.activate(dep, "r1")
    start_app(client, "web", "w1")
    first = client.link("d1", "web/w1")
    client.link("d2", "web/w1")
    tunnel = _open_tunnel(first["port"])  # keeps the link to d1 draining when it is closed
    results: list[Any] = []
    try:
        stop_a = _stop_in_thread(client, results)

        def consumers() -> set[str]:
            return {f"{lk['component']}" for lk in client.list_releases()["links"]}

        # The first stop is past the process and waits for the d1 link's drain.
        wait_for(lambda: "d1" not in consumers(), 10.0)
        assert agent.release("web", "w1")["state"] == "stopped"
        stop_b = _stop_in_thread(client, results)
        stop_b.join(0.5)
    finally:
        tunnel.close()  # the drain ends: the first stop goes on
    stop_a.join(30.0)
    stop_b.join(30.0)
    assert len(results) == 2
    for result in results:
        assert not isinstance(result, AgentRequestError), result.message
        assert result["state"] == "stopped"
    assert client.list_releases()["links"] == []


def test_a_killed_agent_adopts_everything_its_log_recorded(agent: AgentHarness) -> None:
    """Changes since the agent started live in state.log only: a kill -9 then a start must
    find every release, route, link and retirement as it was."""
    client = agent.client
    pids = {}
    for component, release in (("api", "a1"), ("api", "a2"), ("web", "w1"), ("web", "w2")):
        pids[(component, release)] = start_app(client, component, release)["pid"]
    public = free_port()
    client.route("web", public, "w2")
    client.activate("api", "a2")
    link = client.link("api", "web/w2")
    client.retire([("web", "w1", 60.0)])
    client.stop_release("api", "a1")
    log = agent.root / "agent" / "state.log"
    assert log.stat().st_size > 0  # not folded into state.json yet: the log is what is read

    agent.kill9()
    agent.start()
    listed = {(r["component"], r["release"]): r for r in client.list_releases()["releases"]}
    for key in (("api", "a2"), ("web", "w1"), ("web", "w2")):
        assert listed[key]["pid"] == pids[key], key  # adopted, not restarted
    assert listed[("api", "a1")]["state"] == "stopped"
    assert listed[("web", "w1")]["stop_at"] is not None
    assert http_get(public) == (200, "w2")
    assert http_get(link["port"]) == (200, "a2")
    assert client.list_releases()["active"] == {"api": "a2", "web": "w2"}


def test_a_worker_killed_while_the_keeper_holds_over_1024_sockets_comes_back(
    agent: AgentHarness,
) -> None:
    """The keeper holds a copy of every listener (1,000 components have more than 1,024 of
    them with their links): it must still start and watch a new worker."""
    client = agent.client
    start_app(client, "api", "a1")
    client.activate("api", "a1")
    ports = [client.link("api", f"web/w{i}")["port"] for i in range(1100)]
    keeper_fds = len(os.listdir(f"/proc/{agent.keeper_pid}/fd"))
    assert keeper_fds > 1100
    killed = agent.kill9_worker()
    wait_for(lambda: agent._ping() and agent.pid != killed, 30.0)
    assert http_get(ports[-1]) == (200, "a1")
    assert len(client.list_releases()["links"]) == 1100
