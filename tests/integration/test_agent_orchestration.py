"""What the agent does for the orchestrator: lease, warm stops (retire), links and activation."""

from __future__ import annotations

import pytest

from shipyard.agent import AgentRequestError
from tests.agent_fixtures.agent_harness import (
    ROUTERS,
    AgentHarness,
    free_port,
    http_get,
    start_app,
    try_get,
    wait_for,
)

pytest_plugins = ["tests.agent_fixtures.agent_plugin"]


def _state(agent: AgentHarness, component: str, release: str) -> str:
    return str(agent.release(component, release)["state"])


def _code(call: object, *args: object, **kwargs: object) -> AgentRequestError:
    with pytest.raises(AgentRequestError) as err:
        call(*args, **kwargs)  # type: ignore[operator]
    return err.value


@pytest.mark.parametrize("router", ROUTERS)
def test_lease_not_renewed_routes_back_and_stops_the_new_release(
    agent: AgentHarness, router: str
) -> None:
    client = agent.client
    start_app(client, "web", "old")
    public = free_port()
    client.route("web", public, "old", router=router)
    start_app(client, "web", "new")
    revert = [("web", "old"), ("gone", None)]
    lease = client.lease("deploy-1", 60.0, revert=revert, discard=[("web", "new")])
    assert lease["holder"] == "deploy-1" and 0 < lease["expires_in_s"] <= 60.0
    client.route("web", public, "new", router=router)  # the switch
    assert http_get(public) == (200, "new")
    assert client.ping()["lease"]["holder"] == "deploy-1"
    # Another deployment cannot take the host meanwhile.
    assert _code(client.lease, "deploy-2", 5.0).code == "lease_held"
    ttl = 1.0  # the last renewal, then the orchestrator dies
    client.lease("deploy-1", ttl, revert=revert, discard=[("web", "new")])

    wait_for(lambda: try_get(public) == (200, "old"), ttl + 1.0, 0.02)
    wait_for(lambda: _state(agent, "web", "new") == "stopped", 10.0)
    assert _state(agent, "web", "old") == "running"
    lapsed = client.ping()["lease"]["lapsed"]
    assert lapsed["holder"] == "deploy-1"
    assert "web: back on old (was new)" in lapsed["actions"]
    assert "web/new: stopped" in lapsed["actions"]
    assert client.list_releases()["lease"]["lapsed"] == lapsed
    # The dead orchestrator's renewal (if it comes back) learns what happened.
    err = _code(client.lease, "deploy-1", 5.0)
    assert err.code == "lease_lapsed" and "web/new: stopped" in err.message
    ended = client.lease_end("deploy-1")
    assert ended["ended"] is False and ended["lapsed"]["holder"] == "deploy-1"
    assert client.ping()["lease"] is None


def test_lease_renewed_then_ended_keeps_the_new_routes(agent: AgentHarness) -> None:
    client = agent.client
    start_app(client, "web", "old")
    start_app(client, "web", "new")
    public = free_port()
    client.route("web", public, "new")
    client.lease("d", 60.0, revert=[("web", "old")], discard=[("web", "new")])
    renewed = client.lease("d", 60.0, revert=[("web", "old")], discard=[("web", "new")])
    assert renewed["expires_in_s"] > 30  # renewed: a fresh 60 s, not what was left
    assert client.lease_end("d")["ended"] is True  # the commit point
    assert client.ping()["lease"] is None
    assert client.lease("other", 1.0)["holder"] == "other"  # the host is free again
    client.lease_end("other")
    assert http_get(public) == (200, "new")


def test_lease_survives_an_agent_restart(agent: AgentHarness) -> None:
    client = agent.client
    start_app(client, "web", "old")
    start_app(client, "web", "new")
    public = free_port()
    client.route("web", public, "new")
    client.lease("d", 3.0, revert=[("web", "old")], discard=[("web", "new")])
    agent.kill9()  # the whole agent, keeper included: only state.json remembers the lease
    assert agent.state()["lease"]["holder"] == "d"  # not lapsed before the kill
    agent.start()
    wait_for(lambda: try_get(public) == (200, "old"), 15.0)
    wait_for(lambda: _state(agent, "web", "new") == "stopped", 10.0)


def test_retire_stops_in_order_and_a_route_back_cancels(agent: AgentHarness) -> None:
    client = agent.client
    for name in ("r1", "r2", "r3", "r4"):
        start_app(client, "web", name)
    public = free_port()
    client.route("web", public, "r4")
    assert client.retire([("web", "r2", 0.0), ("web", "r1", 0.0)]) == {"scheduled": 2}
    wait_for(lambda: _state(agent, "web", "r1") == _state(agent, "web", "r2") == "stopped", 10.0)
    log = (agent.root / "agent" / "agent.log").read_text()
    assert log.index("web/r2: warm time over") < log.index("web/r1: warm time over")

    # web/r4 (to be stopped in 30 s) uses api through a link: api/p1, due now, waits for it,
    # while cache/c1, which nothing uses, is stopped at once.
    start_app(client, "web", "r5")
    client.route("web", public, "r5")
    start_app(client, "api", "p1")
    start_app(client, "cache", "c1")
    client.link("api", "web/r4")
    client.retire([("web", "r4", 30.0), ("api", "p1", 0.0), ("cache", "c1", 0.0)])
    listed = {r["release"]: r for r in client.list_releases("web")["releases"]}
    assert listed["r4"]["stop_at"] and listed["r5"]["stop_at"] is None
    assert agent.release("api", "p1")["stop_at"]
    wait_for(lambda: _state(agent, "cache", "c1") == "stopped", 10.0)
    assert agent.release("api", "p1")["desired"] == "running"
    client.route("web", public, "r4")  # a rollback inside the warm window: a pure route switch
    assert agent.release("web", "r4")["stop_at"] is None  # dropped: p1's turn comes at once
    wait_for(lambda: _state(agent, "api", "p1") == "stopped", 10.0)
    assert agent.release("web", "r4")["desired"] == "running"
    assert http_get(public) == (200, "r4")


def test_retire_survives_an_agent_restart(agent: AgentHarness) -> None:
    client = agent.client
    start_app(client, "web", "r1")
    client.retire([("web", "r1", 3.0)])
    agent.kill9()
    assert [i["release"] for i in agent.state()["retire"]] == ["r1"]  # not done before the kill
    agent.start()
    wait_for(lambda: _state(agent, "web", "r1") == "stopped", 15.0)
    wait_for(lambda: agent.state()["retire"] == [], 5.0)  # saved once the stop is done
    assert _code(client.retire, [("web", "nope", 1.0)]).code == "unknown_release"


def test_links_follow_the_active_release_or_stay_pinned(agent: AgentHarness) -> None:
    client = agent.client
    start_app(client, "backend", "b1")
    start_app(client, "backend", "b2")
    public = free_port()
    client.route("backend", public, "b1")
    following = client.link("backend", "admin/a1")
    pinned = client.link("backend", "admin/a2", "b2")
    assert following["pinned"] is False and pinned["pinned"] is True
    assert http_get(following["port"]) == (200, "b1")
    assert http_get(pinned["port"]) == (200, "b2")

    client.route("backend", public, "b2")  # the switch: following links move with it
    assert http_get(following["port"]) == (200, "b2")
    client.route("backend", public, "b1")
    assert http_get(following["port"]) == (200, "b1")
    assert http_get(pinned["port"]) == (200, "b2")  # pinned: not moved by a route

    # Re-linking as following (at the switch) re-points in one step and keeps the port.
    again = client.link("backend", "admin/a2")
    assert again["port"] == pinned["port"] and again["pinned"] is False
    assert http_get(pinned["port"]) == (200, "b1")
    links = {link["consumer"]: link for link in client.list_releases()["links"]}
    assert links["admin/a1"]["release"] == "b1" and links["admin/a2"]["port"] == pinned["port"]

    # Stable across restarts: the worker alone (the keeper holds the sockets) and the whole agent.
    agent.kill9_worker()
    wait_for(lambda: try_get(following["port"]) == (200, "b1"), 10.0)
    agent.kill9()
    agent.start()
    assert http_get(following["port"]) == (200, "b1")
    assert http_get(pinned["port"]) == (200, "b1")
    assert {link["port"] for link in client.list_releases()["links"]} == {
        following["port"],
        pinned["port"],
    }

    # Links of a consumer release go when it is stopped on request; unlink closes one.
    start_app(client, "admin", "a1")
    client.stop_release("admin", "a1")
    assert [link["consumer"] for link in client.list_releases()["links"]] == ["admin/a2"]
    assert try_get(following["port"]) is None
    # Started again (a rollback to it): its environment still names the old port, and a new
    # link for it gets that port back.
    assert client.link("backend", "admin/a1")["port"] == following["port"]
    assert http_get(following["port"]) == (200, "b1")
    client.unlink("backend", "admin/a1")
    client.unlink("backend", "admin/a2")
    assert client.list_releases()["links"] == []
    assert try_get(pinned["port"]) is None
    assert _code(client.unlink, "backend", "admin/a2").code == "unknown_link"
    assert _code(client.link, "backend", "no-slash").code == "bad_args"
    assert _code(client.link, "backend", "admin/a3", "nope").code == "unknown_release"


def test_activate_moves_following_links_of_a_component_without_a_port(
    agent: AgentHarness,
) -> None:
    client = agent.client
    start_app(client, "worker", "w1")
    start_app(client, "worker", "w2")
    link = client.link("worker", "web/r1")
    status, body = http_get(link["port"])  # nothing active yet: the link answers 502
    assert status == 502 and "no routed release" in body
    assert client.activate("worker", "w1")["previous_release"] is None
    assert http_get(link["port"]) == (200, "w1")
    assert client.activate("worker", "w2")["previous_release"] == "w1"
    assert http_get(link["port"]) == (200, "w2")
    assert client.list_releases()["active"] == {"worker": "w2"}
    client.stop_release("worker", "w1")
    assert _code(client.activate, "worker", "w1").code == "release_not_running"


def test_lease_lapse_reactivates_a_component_without_a_public_port(agent: AgentHarness) -> None:
    client = agent.client
    start_app(client, "worker", "w1")
    client.activate("worker", "w1")
    link = client.link("worker", "web/r1")  # a consumer following the active worker
    client.lease("d", 60.0, revert=[("worker", "w1")], discard=[("worker", "w2")])
    start_app(client, "worker", "w2")
    client.activate("worker", "w2")
    assert http_get(link["port"]) == (200, "w2")
    client.lease("d", 0.5, revert=[("worker", "w1")], discard=[("worker", "w2")])
    wait_for(lambda: try_get(link["port"]) == (200, "w1"), 10.0, 0.02)
    wait_for(lambda: _state(agent, "worker", "w2") == "stopped", 10.0)
    assert client.list_releases()["active"] == {"worker": "w1"}
    assert "worker: back on w1 (was w2)" in client.ping()["lease"]["lapsed"]["actions"]
