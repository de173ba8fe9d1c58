"""Situations from issue 7 and the engine parts of issue 9, each as a user meets them.

Real processes on loopback ports, a real host agent and a real git repository per test
(engine_fixtures.py). Each test checks what the public ports serve afterwards.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.agent.client import AgentClient
from shipyard.agent.lifecycle import stop_agent
from shipyard.errors import DeploymentFailed, PreflightError, RollbackFailed
from shipyard.service import Shipyard
from shipyard.targets.local import LocalTarget
from tests.integration.engine_fixtures import (
    ENV,
    Project,
    behaviour,
    get_json,
    make_project,
    quiet_ports,
    wait_no_processes_under,
)

pytestmark = pytest.mark.slow


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}


@pytest.fixture
def made() -> Iterator[list[Project]]:
    projects: list[Project] = []
    yield projects
    for project in projects:
        sy = Shipyard(project.folder, environ=_environ())
        try:
            sy.down(ENV)
        finally:
            sy.close()
        wait_no_processes_under(project.scratch)
        project.remove()


def _project(made: list[Project], deps: dict[str, tuple[str, ...]], **extra: object) -> Project:
    project = make_project(deps)
    made.append(project)
    if extra:
        for name in deps:
            project.write_behaviour(name, {**behaviour(name, "v1"), **extra})
        project.commit("v1 settings")
    return project


def _set(project: Project, text_from: str, text_to: str) -> None:
    path = project.folder / "shipyard.toml"
    path.write_text(path.read_text().replace(text_from, text_to))


def _served(project: Project) -> dict[str, str]:
    return {name: get_json(port, "/")[1]["release"] for name, port in project.ports.items()}


def test_a_partial_deploy_keeps_dependents_on_the_active_dependency(made: list[Project]) -> None:
    """`deploy --only a`: b (not redeployed) reaches a's new release once the old a is gone;
    a new a that b cannot use is found by verify and rolled back."""
    project = _project(made, {"a": (), "b": ("a",)}, check_deps=True)
    sy = Shipyard(project.folder, environ=_environ())
    try:
        v1 = sy.deploy(sy.plan(ENV, selection="full")).record
        project.write_behaviour("a", {**behaviour("a", "v2"), "check_deps": True})
        project.commit("a v2")
        v2 = sy.deploy(sy.plan(ENV, selection="only", only=("a",))).record
        assert v2.status == "succeeded"
        target = sy.target(sy.environment(ENV))
        # The old a retires after warm_for (1 s here); b must not notice.
        assert _wait(lambda: ("a", v1.id) not in _live(target)), "old a was never retired"
        assert _served(project) == {"a": v2.id, "b": v1.id}
        assert get_json(project.ports["b"], "/health")[0] == 200
        # A v3 of a that answers its own health but not its dependents: rolled back.
        body = {**behaviour("a", "v3"), "check_deps": True, "serves_dependents": False}
        project.write_behaviour("a", body)
        project.commit("a v3 breaks b")
        with pytest.raises(DeploymentFailed) as failed:
            sy.deploy(sy.plan(ENV, selection="only", only=("a",)))
        assert "b (not redeployed" in failed.value.message
        assert sy.store.list_deployments(ENV, limit=1)[0].status == "rolled_back"
        assert _served(project) == {"a": v2.id, "b": v1.id}
        assert get_json(project.ports["b"], "/health")[0] == 200
    finally:
        sy.close()


def _live(target: LocalTarget) -> set[tuple[str, str]]:
    return {key for key, r in target.running().items() if r.state != "stopped"}


def _wait(condition: object, timeout: float = 30.0) -> bool:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(0.1)
    return False


def test_rollback_inside_the_warm_window_switches_routes_only(made: list[Project]) -> None:
    project = _project(made, {"a": (), "b": ("a",)})
    _set(project, 'warm_for = "1s"', 'warm_for = "60s"')
    project.commit("warm for a minute")
    sy = Shipyard(project.folder, environ=_environ())
    try:
        v1 = sy.deploy(sy.plan(ENV, selection="full")).record
        target = sy.target(sy.environment(ENV))
        pids = {name: target.running()[(name, v1.id)].pid for name in project.ports}
        for name in project.ports:
            project.write_behaviour(name, behaviour(name, "v2"))
        project.commit("v2")
        v2 = sy.deploy(sy.plan(ENV)).record
        assert _served(project) == {"a": v2.id, "b": v2.id}
        assert {("a", v1.id), ("b", v1.id)} <= _live(target)  # still warm
        back = sy.rollback(ENV).record
        assert back.status == "succeeded" and back.rollback_of == v1.id
        assert _served(project) == {"a": v1.id, "b": v1.id}
        # The same processes: nothing was restarted, only routes moved.
        assert {name: target.running()[(name, v1.id)].pid for name in project.ports} == pids
        status = sy.environment_status(ENV)
        assert {c["name"]: c["commit"] for c in status["components"]} == {
            "a": v1.commit,
            "b": v1.commit,
        }
    finally:
        sy.close()


def test_nothing_to_deploy_only_when_what_runs_is_the_last_good_deployment(
    made: list[Project],
) -> None:
    project = _project(made, {"a": (), "b": ("a",)})
    sy = Shipyard(project.folder, environ=_environ())
    try:
        v1 = sy.deploy(sy.plan(ENV, selection="full")).record
        assert sy.plan(ENV).components == ()  # all is well: nothing to deploy
        target = sy.target(sy.environment(ENV))
        target.down("b")  # b stopped behind shipyard's back
        plan = sy.plan(ENV)
        assert plan.kind == "reconcile" and plan.components == ("b",), plan
        assert "b" in plan.drift and "reconcile" in plan.why
        assert "drift: b:" in plan.to_text()
        done = sy.deploy(plan).record
        assert done.status == "succeeded" and done.kind == "reconcile"
        assert _served(project) == {"a": v1.id, "b": v1.id}
    finally:
        sy.close()
    # The agent is stopped with its releases (as `shipyard down` does): the next no-op deploy
    # restores them; a deliberate stop is no news, so it does not speak of a dead agent.
    root = project.folder / ".shipyard" / ENV
    stop_agent(root, stop_processes=True)
    sy = Shipyard(project.folder, environ=_environ())
    try:
        plan = sy.plan(ENV)
        assert "was not running" not in plan.why, plan.why
        assert plan.kind == "reconcile" and set(plan.components) == {"a", "b"}
        assert sy.deploy(plan).record.status == "succeeded"
        assert _served(project) == {"a": v1.id, "b": v1.id}
    finally:
        sy.close()
    # The whole agent is killed (keeper and worker; the releases keep running): the next
    # no-op deploy starts it again and says that the public ports were down.
    ping = AgentClient(root).ping()
    for pid in (ping["keeper_pid"], ping["pid"]):
        os.kill(int(pid), signal.SIGKILL)
    sy = Shipyard(project.folder, environ=_environ())
    try:
        plan = sy.plan(ENV)
        assert "host agent of local was not running" in plan.why, plan.why
        if plan.components:  # a release may have been restarting: the plan restores it
            assert sy.deploy(plan).record.status == "succeeded"
        assert _served(project) == {"a": v1.id, "b": v1.id}
    finally:
        sy.close()


def test_a_rollback_failed_deployment_is_finished_by_recover(made: list[Project]) -> None:
    project = _project(made, {"a": (), "b": ("a",)})
    sy = Shipyard(project.folder, environ=_environ())
    try:
        v1 = sy.deploy(sy.plan(ENV, selection="full")).record
        target = sy.target(sy.environment(ENV))
        # a's v1 process and folder are gone (a disk was cleaned by hand)…
        folder = target.release_dir("a", v1.id)
        aside = folder.with_name("aside")
        target.stop("a", v1.id)
        folder.rename(aside)
        project.write_behaviour("a", behaviour("a", "v2"))
        project.write_behaviour("b", behaviour("b", "v2", "unhealthy"))
        project.commit("v2: b unhealthy")
        # …so the rollback of a failed v2 cannot bring a back: exit 5.
        with pytest.raises(RollbackFailed):
            sy.deploy(sy.plan(ENV))
        failed = sy.store.list_deployments(ENV, limit=1)[0]
        assert failed.status == "rollback_failed"
        assert [d["id"] for d in sy.environment_status(ENV)["rollback_failed"]] == [failed.id]
        aside.rename(folder)  # the cause is fixed: recover finishes the rollback
        assert [v.record.id for v in sy.recover(ENV)] == [failed.id]
        assert sy.store.get_deployment(failed.id).status == "rolled_back"  # type: ignore[union-attr]
        assert _served(project) == {"a": v1.id, "b": v1.id}
        assert sy.environment_status(ENV)["rollback_failed"] == []
        assert sy.recover(ENV) == []  # idempotent
    finally:
        sy.close()


def test_a_rollback_failed_deployment_made_moot_is_marked_superseded(made: list[Project]) -> None:
    project = _project(made, {"a": (), "b": ("a",)})
    sy = Shipyard(project.folder, environ=_environ())
    try:
        v1 = sy.deploy(sy.plan(ENV, selection="full")).record
        target = sy.target(sy.environment(ENV))
        target.stop("a", v1.id)
        shutil.rmtree(target.release_dir("a", v1.id))
        project.write_behaviour("a", behaviour("a", "v2"))
        project.write_behaviour("b", behaviour("b", "v2", "unhealthy"))
        project.commit("v2: b unhealthy")
        with pytest.raises(RollbackFailed):
            sy.deploy(sy.plan(ENV))
        failed = sy.store.list_deployments(ENV, limit=1)[0]
        project.write_behaviour("b", behaviour("b", "v3"))
        project.commit("v3: fixed")
        v3 = sy.deploy(sy.plan(ENV, selection="full")).record
        assert v3.status == "succeeded"
        assert [v.record.id for v in sy.recover(ENV)] == [failed.id]
        after = sy.store.get_deployment(failed.id)
        assert after is not None and after.status == "superseded"
        assert after.error is not None and v3.id in after.error
        assert _served(project) == {"a": v3.id, "b": v3.id}
    finally:
        sy.close()


def test_preflight_finds_a_public_port_held_by_another_process(made: list[Project]) -> None:
    project = _project(made, {"a": ()})
    sy = Shipyard(project.folder, environ=_environ())
    holder = socket.socket()
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        holder.bind(("127.0.0.1", project.ports["a"]))
        holder.listen()
        with pytest.raises(PreflightError) as refused:
            sy.deploy(sy.plan(ENV, selection="full"))
        assert f"port {project.ports['a']}" in refused.value.message
        record = sy.store.list_deployments(ENV, limit=1)[0]
        assert not any(e.step and e.step.startswith("build") for e in sy.store.events(record.id))
    finally:
        holder.close()
        sy.close()


def test_a_port_with_only_time_wait_sockets_is_free(short_tmp: Path) -> None:
    (port,) = quiet_ports(1)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    client = socket.socket()
    client.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    client.bind(("127.0.0.1", port))  # an outgoing connection from that port
    client.connect(server.getsockname())
    accepted, _ = server.accept()
    client.close()  # the active closer's side stays in TIME-WAIT on `port`
    accepted.close()
    server.close()
    with socket.socket() as plain, pytest.raises(OSError):
        plain.bind(("127.0.0.1", port))  # the TIME-WAIT socket is really there
    target = LocalTarget(short_tmp / "root")
    assert target.port_available(port)
    with socket.socket() as listener:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen()
        assert not target.port_available(port)


def test_a_probe_body_echoing_a_secret_is_never_stored(made: list[Project]) -> None:
    project = _project(made, {"a": ()})
    secret = "s3cr3t-" + os.urandom(8).hex()
    (project.folder / ".env.local").write_text(f"API_TOKEN={secret}\n")
    _set(
        project,
        'root = ".shipyard/local"',
        'root = ".shipyard/local"\nsecrets = { dotenv = ".env.local" }',
    )
    _set(project, 'path = "a"', 'path = "a"\nsecrets = ["API_TOKEN"]')
    (project.folder / ".gitignore").write_text(".shipyard/\n__pycache__/\n.env.local\n")
    project.commit("a needs a token")
    sy = Shipyard(project.folder, environ=_environ())
    try:
        sy.deploy(sy.plan(ENV, selection="full"))
        body = {**behaviour("a", "v2", "unhealthy"), "echo_env": "API_TOKEN"}
        project.write_behaviour("a", body)
        project.commit("v2 echoes its token when unhealthy")
        with pytest.raises(DeploymentFailed) as failed:
            sy.deploy(sy.plan(ENV))
        assert secret not in str(failed.value.to_dict())
        assert "[redacted API_TOKEN]" in str(sy.store.events(sy.store.list_deployments(ENV)[0].id))
    finally:
        sy.close()
    raw = (project.folder / ".shipyard" / "state.db").read_bytes()
    wal = project.folder / ".shipyard" / "state.db-wal"
    raw += wal.read_bytes() if wal.exists() else b""
    assert secret.encode() not in raw


def test_rollback_restarts_the_old_release_with_its_own_config(made: list[Project]) -> None:
    """v2 changes b's start command, public port and an env value, and succeeds; once the
    agent stopped v1 (after warm_for), `rollback` starts v1 again as v1 defines it."""
    from tests.integration.engine_fixtures import APP_FILE, APP_SOURCE

    project = _project(made, {"a": (), "b": ("a",)})
    _set(project, 'path = "b"', 'path = "b"\nenv = { GREETING = "v1" }')
    project.commit("b greets")
    sy = Shipyard(project.folder, environ=_environ())
    try:
        v1 = sy.deploy(sy.plan(ENV, selection="full")).record
        (new_port,) = quiet_ports(1)
        (project.folder / "b" / "app_v2.py").write_text(APP_SOURCE)
        _set(
            project,
            f'python {APP_FILE} {project.scratch}"\nport = {project.ports["b"]}',
            f'python app_v2.py {project.scratch}"\nport = {new_port}',
        )
        _set(project, 'GREETING = "v1"', 'GREETING = "v2"')
        for name in project.ports:
            project.write_behaviour(name, behaviour(name, "v2"))
        project.commit("v2: b starts another file, on another port, greets v2")
        v2 = sy.deploy(sy.plan(ENV)).record
        assert v2.status == "succeeded"
        assert get_json(new_port, "/")[1]["greeting"] == "v2"
        target = sy.target(sy.environment(ENV))
        assert _wait(lambda: not {("a", v1.id), ("b", v1.id)} & _live(target))
        back = sy.rollback(ENV).record
        assert back.status == "succeeded"
        status, body = get_json(project.ports["b"], "/")
        assert status == 200 and body["release"] == v1.id and body["greeting"] == "v1"
        assert get_json(project.ports["a"], "/")[1]["release"] == v1.id
        with pytest.raises(OSError):
            get_json(new_port, "/", timeout=1)
    finally:
        sy.close()
