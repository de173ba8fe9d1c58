"""A `command` secrets source runs once per command, whatever needs its values.

Each source command appends a line to a counter file outside the repository before it
prints its values, so the file counts its runs. A deploy needs the deployed environment's
values for the engine (release env, redaction), the preflight checks (presence, rules,
sharing with every other environment) and the leak scan (every environment's values):
each source still runs once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from shipyard.service import Shipyard
from tests.conftest import RunCli, commit_all, free_ports, git

LOCAL_TOKEN = "tok-" + "Zq8rVb2KxW4mNp7LdS3f"
STAGING_TOKEN = "tok-" + "Hc5wYt9QeR1uJx6KvB0g"


def _config(port: int, staging_port: int, runs: Path) -> str:
    return f"""
[project]
name = "counted"
default_environment = "local"

[environments.local]
target = "local"
root = ".shipyard/local"
secrets = {{ command = "echo run >> {runs}/local; cat {runs}/local.env" }}

[environments.staging]
target = "local"
root = ".shipyard/staging"
secrets = {{ command = "echo run >> {runs}/staging; cat {runs}/staging.env" }}

[environments.staging.components.web]
port = {staging_port}

[components.web]
path = "web"
start = "python3 -m http.server $PORT --bind 127.0.0.1"
port = {port}
secrets = ["API_TOKEN"]
health = {{ http = "/", interval = "100ms", deadline = "10s", stable_for = "200ms" }}
"""


@pytest.fixture
def counted(short_tmp: Path) -> Iterator[tuple[Path, Path]]:
    """A one-component project whose two environments read their secrets by command."""
    root, runs = short_tmp / "counted", short_tmp / "runs"
    (root / "web").mkdir(parents=True)
    runs.mkdir()
    (runs / "local.env").write_text(f"API_TOKEN={LOCAL_TOKEN}\n")
    (runs / "staging.env").write_text(f"API_TOKEN={STAGING_TOKEN}\n")
    (root / "web" / "index.html").write_text("v1\n")
    (root / "shipyard.toml").write_text(_config(*free_ports(2), runs))
    (root / ".gitignore").write_text(".shipyard/\n")
    git(root, "init", "-q")
    commit_all(root, "v1")
    yield root, runs
    if (root / ".shipyard" / "local" / "agent").exists():
        Shipyard(root).down("local")


def _runs(runs: Path) -> dict[str, int]:
    return {
        env: len((runs / env).read_text().splitlines()) if (runs / env).exists() else 0
        for env in ("local", "staging")
    }


def test_a_deploy_runs_each_secrets_command_once(
    counted: tuple[Path, Path], run_cli: RunCli
) -> None:
    root, runs = counted
    deploy = run_cli("-C", str(root), "--json", "deploy", "--yes", timeout=120)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert json.loads(deploy.stdout)["status"] == "succeeded"
    # local: engine context, preflight checks, leak-scan values, CLI redactor; staging:
    # the sharing check and the leak-scan values. Once each.
    assert _runs(runs) == {"local": 1, "staging": 1}
    # The values were used: the release got its secret, and nothing printed it.
    env_file = next((root / ".shipyard" / "local" / "web" / "releases").glob("*/.env"))
    assert LOCAL_TOKEN in env_file.read_text()
    assert LOCAL_TOKEN not in deploy.stdout + deploy.stderr
    # The leak scan remembers the clean blobs under a keyed name: no value is written there.
    (cache,) = (root / ".shipyard" / "leak-scan").iterdir()
    for token in (LOCAL_TOKEN, STAGING_TOKEN):
        assert token not in cache.name and token not in cache.read_text()

    check = run_cli("-C", str(root), "--json", "secrets", "check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert _runs(runs) == {"local": 2, "staging": 2}


def test_a_failing_secrets_command_runs_once_and_refuses(
    counted: tuple[Path, Path], run_cli: RunCli
) -> None:
    root, runs = counted
    config = root / "shipyard.toml"
    config.write_text(config.read_text().replace("cat ", "exit 7; cat ", 1))
    commit_all(root, "local's source fails")
    deploy = run_cli("-C", str(root), "deploy", "--yes", timeout=120)
    assert deploy.returncode == 3, deploy.stdout + deploy.stderr
    assert "exited with code 7" in deploy.stdout + deploy.stderr
    assert _runs(runs)["local"] == 1
