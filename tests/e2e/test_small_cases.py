"""Issue 9's small cases, each through the console script: a clear message, the right behaviour.

Every case here once gave a misleading message or silently did the wrong thing.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import tomllib
import urllib.request
from pathlib import Path
from typing import Any

from shipyard.store import LockOwner, Store, new_id
from tests.conftest import RunCli, commit_all, copy_shop, git, shipyard_executable


def agent_status(project: Path, env: str = "local") -> dict[str, Any]:
    """`agent status --json` of the environment's root (never starts an agent)."""
    root = project / ".shipyard" / env
    done = subprocess.run(
        [shipyard_executable(), "--json", "agent", "status", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    info: dict[str, Any] = json.loads(done.stdout)
    return info


def agent_answers(project: Path, env: str = "local") -> bool:
    """Whether a host agent answers under the environment's root (never starts one)."""
    return bool(agent_status(project, env)["running"])


def test_outside_a_git_repository_the_message_says_so(short_tmp: Path, run_cli: RunCli) -> None:
    project = copy_shop(short_tmp / "shop")
    # Git must not find a repository above the temp folder (it would in a checkout under /tmp).
    result = run_cli("-C", str(project), "plan", env={"GIT_CEILING_DIRECTORIES": str(short_tmp)})
    assert result.returncode == 2, result.stdout + result.stderr
    assert "is not in a git repository" in result.stderr
    assert "git init" in result.stderr  # what to do
    assert "does not resolve" not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_repository_without_commits_says_so(short_tmp: Path, run_cli: RunCli) -> None:
    project = copy_shop(short_tmp / "shop")
    git(project, "init", "-q")
    result = run_cli("-C", str(project), "--json", "plan")
    assert result.returncode == 2
    error = json.loads(result.stdout)["error"]
    assert "has no commit yet" in error["message"]
    assert "git commit" in error["hint"]


def test_a_malformed_secrets_line_refuses_the_deploy_naming_its_line(
    shop: Path, run_cli: RunCli
) -> None:
    env_file = shop / ".env.local"
    lines = env_file.read_text().splitlines()
    number, line = next((i, t) for i, t in enumerate(lines, 1) if t.startswith("JWT_SECRET="))
    value = line.split("=", 1)[1]
    lines[number - 1] = f'JWT_SECRET="{value}'  # a quote that is never closed
    env_file.write_text("\n".join(lines) + "\n")
    commit_all(shop, "an unclosed quote")
    result = run_cli("-C", str(shop), "deploy", timeout=120)
    assert result.returncode == 3, result.stdout + result.stderr
    assert f".env.local:{number}: the value of JWT_SECRET opens a quote" in result.stderr
    assert value not in result.stdout + result.stderr
    assert not agent_answers(shop)  # refused before anything started


def test_lock_release_without_a_lock_says_there_is_none(shop: Path, run_cli: RunCli) -> None:
    result = run_cli("-C", str(shop), "lock", "release")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "not locked" in result.stdout
    assert "another deployment" not in result.stdout + result.stderr
    as_json = run_cli("-C", str(shop), "--json", "lock", "release")
    assert json.loads(as_json.stdout) == {"released": None}


def test_lock_release_of_a_held_lock_names_the_holder_and_needs_force(
    shop: Path, run_cli: RunCli
) -> None:
    holder = new_id()
    with Store.open(f"sqlite:///{shop / '.shipyard' / 'state.db'}") as store:
        store.acquire_lock("local", holder, LockOwner("ci", "build-host", 4242), 600)
    refused = run_cli("-C", str(shop), "lock", "release")
    assert refused.returncode == 2
    assert holder in refused.stderr and "ci@build-host pid 4242" in refused.stderr
    assert "--force" in refused.stderr
    forced = run_cli("-C", str(shop), "lock", "release", "--force")
    assert forced.returncode == 0
    assert f"released the lock of {holder}" in forced.stdout


def test_status_of_a_never_deployed_project_starts_no_agent(shop: Path, run_cli: RunCli) -> None:
    result = run_cli("-C", str(shop), "--json", "status")
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["last_good_deployment"] is None
    assert {c["state"] for c in report["components"]} == {"not deployed"}
    assert not agent_answers(shop)
    assert not (shop / ".shipyard" / "local" / "agent").exists()


def test_a_deleted_state_db_is_not_recreated_when_releases_exist(
    shop: Path, run_cli: RunCli
) -> None:
    first = run_cli("-C", str(shop), "--json", "deploy", timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    state_db = shop / ".shipyard" / "state.db"
    state_db.unlink()
    for command in (["status"], ["history"], ["deploy"]):
        result = run_cli("-C", str(shop), *command, timeout=120)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "state database" in result.stderr and "is missing" in result.stderr
        assert "backend in local" in result.stderr  # what says it was deployed
        assert f"touch {state_db}" in result.stderr  # how to go on, on purpose
        assert not state_db.exists()
    state_db.touch()  # the user's say-so: a new, empty history
    history = run_cli("-C", str(shop), "--json", "history")
    assert history.returncode == 0, history.stderr
    assert json.loads(history.stdout) == []


def test_a_corrupt_state_db_gets_a_hint_that_fits(shop: Path, run_cli: RunCli) -> None:
    state_db = shop / ".shipyard" / "state.db"
    state_db.parent.mkdir(parents=True, exist_ok=True)
    state_db.write_bytes(b"this is not a database\n" * 100)
    result = run_cli("-C", str(shop), "history")
    assert result.returncode == 2
    assert "damaged or is not a shipyard state database" in result.stderr
    assert "database is running" not in result.stderr
    assert "Traceback" not in result.stderr


def _kill_whole_agent(project: Path, env: str = "local") -> None:
    """SIGKILL the agent's worker and its keeper: every public port goes down with them."""
    info = agent_status(project, env)
    for pid in (info["pid"], info.get("keeper_pid")):
        if pid:
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while agent_answers(project, env) and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_dead_agent_is_restarted_by_any_command_that_says_so(shop: Path, run_cli: RunCli) -> None:
    assert run_cli("-C", str(shop), "deploy", timeout=120).returncode == 0
    admin = tomllib.loads((shop / "shipyard.toml").read_text())["components"]["admin"]["port"]
    for command in (["status"], ["history"], ["--json", "health"]):
        _kill_whole_agent(shop)
        result = run_cli("-C", str(shop), *command, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "was not running" in result.stderr and "restarted" in result.stderr, command
        with urllib.request.urlopen(f"http://127.0.0.1:{admin}/health", timeout=10) as r:
            assert r.status == 200  # serving again
    # `down` stops the agent on purpose: reading commands report what is stopped, neither
    # start an agent that would keep running nor call it news.
    assert run_cli("-C", str(shop), "down").returncode == 0
    for command in (["status"], ["history"], ["health"]):
        quiet = run_cli("-C", str(shop), *command)
        assert "restarted" not in quiet.stderr, command
        assert not agent_answers(shop), command
    assert "stopped" in run_cli("-C", str(shop), "status").stdout
    # A deploy brings it back (a reconcile: what runs differs from the last good deployment).
    again = run_cli("-C", str(shop), "deploy", timeout=120)
    assert again.returncode == 0 and "reconcile" in again.stdout, again.stdout + again.stderr
