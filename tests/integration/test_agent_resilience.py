"""Nothing that dies takes the site down: the agent's worker, its keeper, a release (issue 8)."""

from __future__ import annotations

import os
import signal

import pytest

from shipyard.agent import ensure_agent
from shipyard.agent.procinfo import is_same_process
from tests.agent_fixtures.agent_harness import (
    AgentHarness,
    free_port,
    http_get,
    start_app,
    wait_for,
)
from tests.agent_fixtures.load import LoadLoop
from tests.integration.test_agent_router import ROUTERS

pytest_plugins = ["tests.agent_fixtures.agent_plugin"]


def _new_worker(agent: AgentHarness, old: int) -> int:
    def pid() -> int | None:
        try:
            value = agent.pid
        except Exception:
            return None
        return value if value != old else None

    return int(wait_for(pid, 10.0, 0.02))


@pytest.mark.parametrize("router", ROUTERS)
def test_kill9_of_the_worker_under_load_refuses_and_fails_nothing(
    agent: AgentHarness, router: str
) -> None:
    client = agent.client
    release = start_app(client, "web", "r1")
    public = free_port()
    client.route("web", public, "r1", router=router)
    link = client.link("web", "admin/a1")
    keeper = agent.keeper_pid
    with LoadLoop(public, clients=4) as load, LoadLoop(link["port"], clients=2) as linked:
        load.wait_for_ok(100)
        linked.wait_for_ok(50)
        for _ in range(3):
            killed = agent.kill9_worker()
            worker = _new_worker(agent, killed)
            assert agent.keeper_pid == keeper and worker != killed
            load.wait_for_ok(100)
            linked.wait_for_ok(50)
    for loop in (load, linked):
        assert loop.refused == 0, loop.failures[:5]
        assert loop.failures == [], f"{len(loop.failures)} failed: {loop.failures[:5]}"
        assert set(loop.bodies) == {"r1"}
    rel = agent.release("web", "r1")
    assert rel["pid"] == release["pid"] and rel["restarts"] == 0  # adopted, never restarted
    status = agent.cli("status", "--json")
    assert status.returncode == 0 and f'"keeper_pid": {keeper}' in status.stdout


def test_kill9_of_a_release_under_load_fails_no_idempotent_request(agent: AgentHarness) -> None:
    """Builtin router only: it holds a response's head until its body starts, so a release
    killed between the two costs a retry. HAProxy forwards the head at once, and such a
    response is cut short (documented in docs/architecture.md, "Routers")."""
    client = agent.client
    start_app(client, "web", "r1")
    public = free_port()
    client.route("web", public, "r1")
    with LoadLoop(public, clients=4) as load:
        load.wait_for_ok(100)
        for _ in range(3):
            pid = int(agent.release("web", "r1")["pid"])
            os.kill(pid, signal.SIGKILL)
            wait_for(lambda p=pid: not is_same_process(p, None), 5.0, 0.01)
            wait_for(lambda p=pid: agent.release("web", "r1")["pid"] not in (None, p), 10.0)
            load.wait_for_ok(100)
    assert load.refused == 0 and load.failures == [], load.failures[:5]
    assert load.client_retries == 0  # the client's connection never broke
    stats = client.list_releases("web")["routes"][0]["stats"]
    assert stats["crash_waits"] >= 1
    assert http_get(public) == (200, "r1")


def test_kill9_of_the_whole_agent_then_a_command_restarts_it(agent: AgentHarness) -> None:
    client = agent.client
    release = start_app(client, "web", "r1")
    public = free_port()
    client.route("web", public, "r1")
    # The keeper alone: its worker notices and exits too (nothing would restart it), leaving
    # the release running; the next command that needs the agent starts a whole new one.
    keeper, worker = agent.keeper_pid, agent.pid
    os.kill(keeper, signal.SIGKILL)
    wait_for(lambda: not is_same_process(worker, None), 10.0)
    assert is_same_process(release["pid"], None)
    started = ensure_agent(agent.root)
    assert started[1] is True  # it says it had to start one
    agent.remember()
    assert http_get(public) == (200, "r1")
    assert agent.release("web", "r1")["pid"] == release["pid"]
    assert ensure_agent(agent.root)[1] is False  # running: nothing to do
