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


_PORT_LOCKS = Path("/tmp/shipyard-test-ports.lock")
_reserved: set[int] = set()
_lock_fd: int | None = None


def _port_range() -> range:
    """Ports nobody picks at random: above the kernel's ephemeral range.

    Outgoing connections and `bind(port=0)` draw from the ephemeral range, and the agent picks
    its private ports in 20000–32767; a port chosen there was once taken by someone else
    between the test choosing it and the agent binding it.
    """
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    if 65535 - high >= 1000:
        return range(high + 1, 65536)
    return range(1024, min(low, 20000))  # the ephemeral range reaches the top: use below it


def free_ports(count: int) -> list[int]:
    """Loopback ports nobody listens on, reserved for this test process until it exits.

    Each port is reserved by a POSIX byte-range lock at offset `port` in one shared file,
    so parallel pytest-xdist workers (and other test runs on the machine) never hand out the
    same port, even though the test binds it only later, through the agent.
    """
    import fcntl
    import random
    import socket

    global _lock_fd
    if _lock_fd is None:
        # One descriptor for the whole process: closing any descriptor of the file would
        # drop every lock this process holds on it.
        _lock_fd = os.open(_PORT_LOCKS, os.O_RDWR | os.O_CREAT, 0o666)
    candidates = _port_range()
    rng = random.SystemRandom()
    chosen: list[int] = []
    for _ in range(len(candidates)):
        if len(chosen) == count:
            return chosen
        port = rng.choice(candidates)
        if port in _reserved:
            continue
        try:
            fcntl.lockf(_lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port, os.SEEK_SET)
        except OSError:
            continue  # another process holds it
        _reserved.add(port)  # ours now, whether or not it is usable: never try it again
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue  # something else listens there (or it is in TIME-WAIT)
        chosen.append(port)
    if len(chosen) == count:
        return chosen
    raise RuntimeError(f"no {count} free loopback ports left in {candidates}")


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


def copy_shop(dest: Path) -> Path:
    """A copy of the demo at `dest` (no git repository), on free ports."""
    shutil.copytree(SHOP, dest, ignore=shutil.ignore_patterns(".shipyard", "__pycache__"))
    config = dest / "shipyard.toml"
    text = config.read_text()
    for old, new in zip(
        ("port = 4000", "port = 4001", "port = 4003", "port = 5000", "port = 5001", "port = 5003"),
        free_ports(6),
        strict=True,
    ):
        text = text.replace(old, f"port = {new}")
    config.write_text(text)
    return dest


@pytest.fixture
def shop(short_tmp: Path, run_cli: RunCli) -> Iterator[Path]:
    """A copy of the demo in its own git repository, on free ports; stopped afterwards."""
    project = copy_shop(short_tmp / "shop")
    git(project, "init", "-q")
    commit_all(project, "v1")
    yield project
    for env in ("local", "staging"):
        if (project / ".shipyard" / env / "agent").exists():
            run_cli("-C", str(project), "down", "--env", env)
