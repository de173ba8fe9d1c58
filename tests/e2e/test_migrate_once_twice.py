"""A migrate step asks the tool for its state once, then migrates, then checks the head.

The component's `command` migrations log every run to a file outside the repository, so
the file counts them: a first deploy runs `current` (what is pending, journaled and checked),
`up`, and `current` again (did it reach the head?), nothing more.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.service import Shipyard
from tests.conftest import RunCli, commit_all, free_ports, git


def _config(port: int, runs: Path) -> str:
    return f"""
[project]
name = "migrated"
default_environment = "local"

[environments.local]
target = "local"
root = ".shipyard/local"

[components.web]
path = "web"
start = "python3 -m http.server $PORT --bind 127.0.0.1"
port = {port}
health = {{ http = "/", interval = "100ms", deadline = "10s", stable_for = "200ms" }}

[components.web.migrations]
tool = "command"
up = "echo up >> {runs}/log; echo 1 > {runs}/revision"
current = "echo current >> {runs}/log; cat {runs}/revision 2>/dev/null || true"
down = "echo down >> {runs}/log; rm -f {runs}/revision"
"""


@pytest.fixture
def migrated(short_tmp: Path) -> Iterator[tuple[Path, Path]]:
    root, runs = short_tmp / "migrated", short_tmp / "runs"
    (root / "web").mkdir(parents=True)
    runs.mkdir()
    (root / "web" / "index.html").write_text("v1\n")
    (root / "shipyard.toml").write_text(_config(free_ports(1)[0], runs))
    (root / ".gitignore").write_text(".shipyard/\n")
    git(root, "init", "-q")
    commit_all(root, "v1")
    yield root, runs
    if (root / ".shipyard" / "local" / "agent").exists():
        Shipyard(root).down("local")


def test_a_migrate_step_reads_the_state_once_before_and_once_after(
    migrated: tuple[Path, Path], run_cli: RunCli
) -> None:
    root, runs = migrated
    deploy = run_cli("-C", str(root), "--json", "deploy", "--yes", timeout=120)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert json.loads(deploy.stdout)["status"] == "succeeded"
    assert (runs / "log").read_text().split() == ["current", "up", "current"]
    logs = run_cli("-C", str(root), "logs", json.loads(deploy.stdout)["id"])
    assert "schema (none) → 1" in logs.stdout, logs.stdout
