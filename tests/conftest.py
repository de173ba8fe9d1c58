"""Shared fixtures: running the real `shipyard` console script."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHOP = REPO / "examples" / "shop"


def shipyard_executable() -> str:
    """The console script installed next to the interpreter running the tests."""
    candidate = Path(sys.executable).with_name("shipyard")
    found = str(candidate) if candidate.exists() else shutil.which("shipyard")
    if not found:
        pytest.fail("the shipyard console script is not installed: run `make test`")
    return found


RunCli = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def run_cli() -> RunCli:
    """Run `shipyard ARGS…` as a real subprocess and return its result."""

    def run(
        *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [shipyard_executable(), *args],
            cwd=cwd,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on right now (bound, then released)."""
    import socket

    sockets = []
    for _ in range(count):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        sockets.append(s)
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def git(cwd: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
        env={
            **os.environ,
            "GIT_AUTHOR_NAME": "t",
            "GIT_AUTHOR_EMAIL": "t@example.com",
            "GIT_COMMITTER_NAME": "t",
            "GIT_COMMITTER_EMAIL": "t@example.com",
        },
    )
    return done.stdout.strip()


def commit_all(cwd: Path, message: str) -> str:
    git(cwd, "add", "-A")
    git(cwd, "commit", "-q", "-m", message)
    return git(cwd, "rev-parse", "HEAD")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temp folder with a short path: unix socket paths are limited to 107 bytes."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="sy-", dir="/tmp"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def shop(short_tmp: Path, run_cli: RunCli) -> Iterator[Path]:
    """A copy of the demo in its own git repository, on free ports; stopped afterwards."""
    project = short_tmp / "shop"
    shutil.copytree(SHOP, project, ignore=shutil.ignore_patterns(".shipyard", "__pycache__"))
    config = project / "shipyard.toml"
    text = config.read_text()
    for old, new in zip(
        ("port = 4000", "port = 4001", "port = 4003", "port = 5000", "port = 5001", "port = 5003"),
        free_ports(6),
        strict=True,
    ):
        text = text.replace(old, f"port = {new}")
    config.write_text(text)
    git(project, "init", "-q")
    commit_all(project, "v1")
    yield project
    for env in ("local", "staging"):
        if (project / ".shipyard" / env / "agent").exists():
            run_cli("-C", str(project), "down", "--env", env)
