"""examples/pystack deployed end to end: FastAPI + uvicorn, Django + gunicorn, a worker.

Real dependencies installed by uv from this machine's package indexes, into a wheel cache
kept between test runs (so a rerun installs from disk). Skipped, saying so, when neither
a local index nor PyPI offers the pinned packages.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, RunCli, commit_all, free_ports, git
from tests.e2e.pyindex import unavailable

PYSTACK = REPO / "examples" / "pystack"
# Kept between runs on the project's file system (uv hard-links from it).
WHEEL_CACHE = Path("/tmp/shipyard-test-uv-cache")


def pinned(component: str) -> list[str]:
    lines = (PYSTACK / component / "requirements.txt").read_text().splitlines()
    return [line.split("==")[0] for line in lines if "==" in line]


def packages_available() -> str | None:
    return unavailable([name for c in ("api", "web") for name in pinned(c)])


@pytest.fixture
def pystack(short_tmp: Path, run_cli: RunCli) -> Iterator[Path]:
    why = packages_available()
    if why:
        pytest.skip(why)
    project = short_tmp / "pystack"
    shutil.copytree(PYSTACK, project, ignore=shutil.ignore_patterns(".shipyard", "__pycache__"))
    config = project / "shipyard.toml"
    api_port, web_port = free_ports(2)
    config.write_text(
        config.read_text()
        .replace("port = 4100", f"port = {api_port}")
        .replace("port = 4101", f"port = {web_port}")
    )
    git(project, "init", "-q")
    commit_all(project, "pystack")
    yield project
    if (project / ".shipyard" / "local" / "agent").exists():
        run_cli("-C", str(project), "down", timeout=60)


def cli(run_cli: RunCli, project: Path, *args: str) -> Any:
    result = run_cli(
        "-C", str(project), "--json", *args, env={"UV_CACHE_DIR": str(WHEEL_CACHE)}, timeout=600
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)


def journal(run_cli: RunCli, project: Path, deployment_id: str) -> str:
    return run_cli("-C", str(project), "logs", deployment_id, timeout=60).stdout


def get(port: int, path: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def ports(project: Path) -> tuple[int, int]:
    text = (project / "shipyard.toml").read_text()
    api, web = (int(line.split("=")[1]) for line in text.splitlines() if line.startswith("port"))
    return api, web


def serves(project: Path, release: str) -> None:
    api, web = ports(project)
    assert get(api, "/health") == {"ok": True}
    assert get(api, "/api/hello") == {"hello": "world", "release": release}
    page = get(web, "/")
    assert page["release"] == release and page["notes"] == 0  # migrated: the table exists
    assert page["api"]["hello"] == "world"


def wait_serving(project: Path, release: str, seconds: float = 120) -> None:
    """Until every port serves `release` again (the agent restarts a killed process)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            serves(project, release)
            return
        except (OSError, urllib.error.URLError, AssertionError, ValueError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_pystack_deploys_serves_survives_and_reinstalls_only_what_changed(
    pystack: Path, run_cli: RunCli
) -> None:
    first = cli(run_cli, pystack, "deploy", "--tests", "full")
    release = first["id"]
    serves(pystack, release)
    log = journal(run_cli, pystack, release)
    # api and worker have the same lock: one environment for both; web its own.
    assert log.count("installed with uv") == 2, log
    assert log.count("reused (nothing installed)") == 1, log

    # kill -9 of every release process: the agent restarts each, and they serve again.
    status = cli(run_cli, pystack, "status")
    pids = {c["name"]: c["pid"] for c in status["components"]}
    assert all(pids.values()), status
    for pid in pids.values():
        os.kill(pid, signal.SIGKILL)
    wait_serving(pystack, release)
    after = {c["name"]: c for c in cli(run_cli, pystack, "status")["components"]}
    assert all(after[name]["pid"] != pid for name, pid in pids.items())

    # Nothing changed: a full deploy reuses every artifact and installs nothing.
    full = cli(run_cli, pystack, "deploy", "--full")
    log = journal(run_cli, pystack, full["id"])
    assert "installed with" not in log, log
    assert log.count("already built") == 3, log
    wait_serving(pystack, full["id"])

    # web's requirements change: only web's environment is installed.
    requirements = pystack / "web" / "requirements.txt"
    requirements.write_text(requirements.read_text() + "six==1.17.0\n")
    commit_all(pystack, "web needs six")
    changed = cli(run_cli, pystack, "deploy", "--full")
    log = journal(run_cli, pystack, changed["id"])
    installed = [line for line in log.splitlines() if "installed with" in line]
    assert len(installed) == 1 and " web " in installed[0], log
    assert log.count("already built") == 2, log
    wait_serving(pystack, changed["id"])
