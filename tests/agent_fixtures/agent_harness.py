"""Helpers for the agent tests: real daemons, and nothing left behind."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from shipyard.agent import AgentClient, AgentRequestError
from shipyard.agent.procinfo import has_exited, is_same_process, start_ticks
from shipyard.agent.state import read_state
from tests.conftest import free_ports

# Tests of what a route does run against both routers (HAProxy's skip without it).
ROUTERS = [
    "builtin",
    pytest.param(
        "haproxy",
        marks=pytest.mark.skipif(
            shutil.which("haproxy") is None,
            reason="haproxy is not installed (make test installs Debian's haproxy as root)",
        ),
    ),
]

FIXTURES = Path(__file__).resolve().parent
APP = FIXTURES / "app.py"
SRC = FIXTURES.parents[1] / "src"


def free_port() -> int:
    """A port nobody listens on, reserved for this test process (see `free_ports`)."""
    return free_ports(1)[0]


def wait_for(predicate: Callable[[], Any], timeout: float = 5.0, interval: float = 0.05) -> Any:
    """Poll until `predicate()` is truthy; return its value or fail with the last one."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")


def http_get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def try_get(port: int, path: str = "/", timeout: float = 5.0) -> tuple[int, str] | None:
    """Like http_get, but None when nothing answers (yet)."""
    try:
        return http_get(port, path, timeout)
    except OSError:
        return None


def app_argv(*options: str, python: str = sys.executable) -> list[str]:
    return [python, str(APP), *options]


class AgentHarness:
    """One agent root: start (as a daemon, through the CLI), kill, and clean up after."""

    def __init__(self, root: Path, launcher: list[str] | None = None, cwd: Path | None = None):
        self.root = root
        self.launcher = launcher or [sys.executable, "-m", "shipyard.agent"]
        self.cwd = cwd
        self.agent_pids: list[tuple[int, int | None]] = []
        self.client = AgentClient(root, timeout=20.0)

    def cli(self, *args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
        return subprocess.run(
            [*self.launcher, *args, "--root", str(self.root)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.cwd,
            env=env,
        )

    def start(self) -> AgentClient:
        proc = self.cli("start")
        assert proc.returncode == 0, proc.stderr + proc.stdout
        self.remember()
        return self.client

    def remember(self) -> None:
        """Note the agent's processes (worker and keeper), to kill them at cleanup if needed."""
        ping = self.client.ping()
        for pid in (ping["pid"], ping.get("keeper_pid")):
            if pid:
                self.agent_pids.append((int(pid), start_ticks(int(pid))))

    @property
    def pid(self) -> int:
        """The worker's pid (the process that routes and supervises)."""
        return int(self.client.ping()["pid"])

    @property
    def keeper_pid(self) -> int:
        return int(self.client.ping()["keeper_pid"])

    def kill9(self) -> int:
        """kill -9 of the whole agent, keeper first (nothing restarts it); the worker's pid."""
        ping = wait_for(self._ping, 10.0)  # a worker just restarted may not answer yet
        pid, keeper = int(ping["pid"]), int(ping["keeper_pid"])
        os.kill(keeper, signal.SIGKILL)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: has_exited(pid, None) and has_exited(keeper, None), 5.0)
        return pid

    def _ping(self) -> dict[str, Any] | None:
        try:
            return dict(self.client.ping())
        except AgentRequestError:
            return None

    def kill9_worker(self) -> int:
        """kill -9 of the worker only (its keeper starts a new one); the killed pid."""
        pid = int(wait_for(self._ping, 10.0)["pid"])
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: has_exited(pid, None), 5.0)
        return pid

    def state(self) -> dict[str, Any]:
        """What the agent saved (state.json with state.log replayed over it)."""
        return read_state(self.root / "agent" / "state.json")

    def release(self, component: str, release: str) -> dict[str, Any]:
        for info in self.client.list_releases(component)["releases"]:
            if info["release"] == release:
                return dict(info)
        raise AssertionError(f"no release {component}/{release}")

    def cleanup(self) -> None:
        """Shut the agent down with its releases; then SIGKILL whatever is still ours."""
        with suppress(AgentRequestError):
            self.client.shutdown(stop_processes=True)
        records = self.state()["releases"]
        for rec in records:
            pid, ticks = rec.get("pid"), rec.get("start_ticks")
            if pid and is_same_process(pid, ticks):
                with suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
        for pid, ticks in self.agent_pids:
            if is_same_process(pid, ticks):
                with suppress(ProcessLookupError):  # it may exit after the check
                    os.kill(pid, signal.SIGKILL)


@contextmanager
def agent_root(root: Path, **kwargs: Any) -> Iterator[AgentHarness]:
    harness = AgentHarness(root, **kwargs)
    try:
        yield harness
    finally:
        harness.cleanup()


def start_app(
    client: AgentClient,
    component: str,
    release: str,
    *options: str,
    wait_healthy: bool = True,
    python: str = sys.executable,
) -> dict[str, Any]:
    """Start the fixture app as a release and (by default) wait until /health answers."""
    info = client.start_release(
        component,
        release,
        FIXTURES,
        argv=app_argv(*options, python=python),
        env={"SHIPYARD_RELEASE": release},
        stop_timeout=5.0,
    )
    if wait_healthy:
        wait_for(
            lambda: client.probe(kind="http", port=info["port"], path="/health", timeout=1.0)["ok"],
            10.0,
        )
    return info
