"""Releases carry their own spec: a rollback judges and restarts v1 by v1's shipyard.toml.

A table of config changes between v1 and v2 of one component (health path, start command,
public port, an env value, a new dependency, a migrations folder) × failure kinds of v2
(build fails, start crashes, health never passes, final verify fails): every case ends
`rolled_back` (exit 1) with v1 serving and healthy on the public ports, as v1 defines them.
Then v1's process is killed and the environment is restored by `recover`-free means: a
`deploy --ref <v1 commit>` after the newer commits deploys v1 with its own config.

Real processes, a real host agent, a real git repository per change (engine_fixtures.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.errors import DeploymentFailed
from shipyard.service import Shipyard
from tests.integration.engine_fixtures import (
    APP_FILE,
    APP_SOURCE,
    ENV,
    Project,
    behaviour,
    get_json,
    make_project,
    quiet_ports,
    wait_no_processes_under,
)

pytestmark = pytest.mark.slow

DEPS = {"a": (), "b": ("a",), "c": ()}
CHANGES = ("health_path", "start", "port", "env", "dependency", "migrations")
FAILURES = ("build", "crash", "unhealthy", "verify")


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("SHIPYARD_")}


def _set_component(text: str, name: str, key: str, value: str) -> str:
    """Replace (or add) `key = value` in the `[components.NAME]` table of a generated config."""
    head = f"[components.{name}]\n"
    start = text.index(head) + len(head)
    end = text.find("\n[", start)
    end = len(text) if end == -1 else end + 1
    lines = [ln for ln in text[start:end].splitlines() if not ln.startswith(f"{key} =")]
    lines.insert(0, f"{key} = {value}")
    return text[:start] + "\n".join(lines) + "\n" + text[end:]


def _apply_change(project: Project, change: str, v2_port: int) -> dict[str, object]:
    """Edit b's config (and files) for v2; returns b's extra behaviour settings for v2."""
    folder = project.folder
    config = (folder / "shipyard.toml").read_text()
    extra: dict[str, object] = {}
    if change == "health_path":
        health = (
            '{ http = "/healthz", interval = "50ms", timeout = "1s", deadline = "2s", '
            'stable_for = "500ms" }'
        )
        config = _set_component(config, "b", "health", health)
        extra["health_path"] = "/healthz"
    elif change == "start":
        (folder / "b" / "app_v2.py").write_text(APP_SOURCE)
        config = _set_component(config, "b", "start", '"python app_v2.py v2"')
    elif change == "port":
        config = _set_component(config, "b", "port", str(v2_port))
    elif change == "env":
        config = _set_component(config, "b", "env", '{ GREETING = "v2" }')
    elif change == "dependency":
        config = _set_component(config, "b", "depends_on", '["a", "c"]')
    elif change == "migrations":
        migrations = folder / "b" / "migrations"
        migrations.mkdir(exist_ok=True)
        (migrations / "0001_notes.up.sql").write_text("CREATE TABLE notes (id INTEGER);\n")
        (migrations / "0001_notes.down.sql").write_text("DROP TABLE notes;\n")
        config = _set_component(config, "b", "migrations", '{ tool = "sql", dir = "migrations" }')
        config = _set_component(
            config, "b", "env", '{ GREETING = "v1", DATABASE_URL = "sqlite:///shared/b.db" }'
        )
    (folder / "shipyard.toml").write_text(config)
    return extra


@pytest.fixture
def project() -> Iterator[Project]:
    made = make_project(DEPS)
    config = (made.folder / "shipyard.toml").read_text()
    config = _set_component(config, "b", "env", '{ GREETING = "v1" }')
    (made.folder / "shipyard.toml").write_text(config)
    made.commit("v1 greets")
    try:
        yield made
    finally:
        sy = Shipyard(made.folder, environ=_environ())
        try:
            sy.down(ENV)
        finally:
            sy.close()
        wait_no_processes_under(made.scratch)
        made.remove()


def _serves_v1(project: Project, v1_release: str) -> None:
    for name, port in project.ports.items():
        status, body = get_json(port, "/")
        assert status == 200, (name, status, body)
        assert body["version"] == "v1" and body["release"] == v1_release, (name, body)
        assert get_json(port, "/health")[0] == 200, name
    assert get_json(project.ports["b"], "/")[1]["greeting"] == "v1"


@pytest.mark.parametrize("change", CHANGES)
def test_a_failed_v2_with_changed_config_rolls_back_to_v1_as_v1_defines_it(
    project: Project, change: str
) -> None:
    sy = Shipyard(project.folder, environ=_environ())
    try:
        v1 = sy.deploy(sy.plan(ENV, selection="full")).record
        assert v1.status == "succeeded"
        v1_commit = v1.commit
        assert v1_commit is not None
        _serves_v1(project, v1.id)
        spec_file = project.folder / ".shipyard" / ENV / "b" / "releases" / v1.id / "release.json"
        saved = json.loads(spec_file.read_text())
        assert saved["commit"] == v1_commit and saved["spec"]["env"] == {"GREETING": "v1"}
        (v2_port,) = quiet_ports(1)
        extra = _apply_change(project, change, v2_port)
        for failure in FAILURES:
            for name in DEPS:
                body = behaviour(name, "v2", failure if name == "b" else "ok")
                project.write_behaviour(name, {**body, **(extra if name == "b" else {})})
            project.commit(f"v2 {change} {failure}")
            plan = sy.plan(ENV, selection="full")
            with pytest.raises(DeploymentFailed) as failed:
                sy.deploy(plan)
            assert failed.value.exit_code == 1
            newest = sy.store.list_deployments(ENV, limit=1)[0]
            assert newest.status == "rolled_back", (change, failure, newest.error)
            _serves_v1(project, v1.id)
            if change == "port":
                with pytest.raises(OSError):
                    get_json(v2_port, "/", timeout=1)
            status = sy.environment_status(ENV)
            assert {c["name"]: c["commit"] for c in status["components"]} == {
                n: v1_commit for n in DEPS
            }
        # v1's own config, again: the release of b is stopped behind the agent's back…
        target = sy.target(sy.environment(ENV))
        target.stop("b", v1.id)
        # …and `deploy --ref <v1>` after the newer commits brings it back as v1 defines it.
        again = sy.deploy(sy.plan(ENV, selection="full", ref=v1_commit))
        assert again.record.status == "succeeded"
        for name, port in project.ports.items():
            status_code, body = get_json(port, "/")
            assert status_code == 200 and body["version"] == "v1", (name, body)
        assert get_json(project.ports["b"], "/")[1]["greeting"] == "v1"
        assert get_json(project.ports["b"], "/health")[0] == 200
    finally:
        sy.close()


def test_plan_says_when_the_commit_config_differs_from_the_work_tree(project: Project) -> None:
    sy = Shipyard(project.folder, environ=_environ())
    try:
        assert sy.plan(ENV).config_note is None
        path: Path = project.folder / "shipyard.toml"
        path.write_text(_set_component(path.read_text(), "b", "env", '{ GREETING = "dirty" }'))
        plan = sy.plan(ENV)
        assert plan.config_from == "commit"
        assert plan.config_note is not None and "differs from the work tree" in plan.config_note
        assert sy.plan(ENV, allow_dirty=True).config_from == "work tree"
    finally:
        sy.close()


def test_release_spec_round_trip_keeps_every_setting(project: Project) -> None:
    from shipyard.core.spec import spec_from_dict, spec_to_dict

    sy = Shipyard(project.folder, environ=_environ())
    try:
        comp = sy.config.components_for(sy.environment(ENV))["b"]
        assert spec_from_dict(json.loads(json.dumps(spec_to_dict(comp)))) == comp
        assert APP_FILE in comp.start
    finally:
        sy.close()
